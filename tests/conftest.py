"""Shared fixtures: the tiny hand-made VOC dataset (tests/tiny_voc.py), the small built-in dataset, one quick run,
and the `gpu` marker's skip where CUDA is absent."""

from __future__ import annotations

import os

# One torch thread in the tests and in every process they start (set before torch is imported; a user's
# own OMP_NUM_THREADS is kept): the workloads are tiny, and processes side by side with two spinning
# OpenMP threads each on a 2-core machine slow each other many times over.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path

import pytest

from tiny_voc import make_tiny_voc


@pytest.fixture
def tiny_voc(tmp_path: Path) -> Path:
    """The devkit root (``tmp/VOCdevkit``'s parent) of a fresh tiny VOC dataset; returns the VOC2012 folder."""
    return make_tiny_voc(tmp_path)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of small tensors: as fast, and far less sensitive to a busy 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def builtin_small(tmp_path_factory) -> tuple[Path, dict]:
    """The small built-in dataset (seed 0), built once per test session, and its build summary.

    Tests only read it; a test that changes a dataset copies it first.
    """
    from data.builtin import build_builtin_dataset

    root = tmp_path_factory.mktemp("builtin") / "data"
    summary = build_builtin_dataset(root, seed=0, size="small", workers=2, progress=False)
    return root, summary


@pytest.fixture(scope="session")
def quick_run(builtin_small, tmp_path_factory) -> tuple[Path, Path, float]:
    """``sharpen run`` on configs/quick.toml over the session's built-in dataset, done once per session:
    (run folder, dataset root, seconds). Tests compare against it and copy it; none changes it."""
    import time

    from pipeline.cli import main
    from runs import run_args

    data_root, run_dir = builtin_small[0], tmp_path_factory.mktemp("quick") / "run"
    t0 = time.perf_counter()
    assert main(run_args(run_dir, data_root)) == 0
    return run_dir, data_root, time.perf_counter() - t0


@pytest.fixture(scope="session", autouse=True)
def sharpen_cache(tmp_path_factory) -> Path:
    """A per-session cache for the built-in pretrained weights (sharpen_core/pretrained.py), so no test
    reads or writes this machine's ``~/.cache/sharpen-focus``; a user's own SHARPEN_CACHE is left alone
    only outside the tests."""
    folder = tmp_path_factory.mktemp("sharpen-cache")
    old = os.environ.get("SHARPEN_CACHE")
    os.environ["SHARPEN_CACHE"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("SHARPEN_CACHE", None)
    else:
        os.environ["SHARPEN_CACHE"] = old


def pytest_collection_modifyitems(config, items):
    """``gpu`` tests need CUDA: they are skipped, saying so, where torch sees none (CI, CPU machines);
    ``scripts/gpu_check.sh`` runs them (``pytest -m gpu``) on a GPU machine."""
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu:
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="a `gpu` test: needs CUDA (scripts/gpu_check.sh runs them on a GPU machine)")
        for item in gpu:
            item.add_marker(skip)
