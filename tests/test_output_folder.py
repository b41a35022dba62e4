"""A stage's output folder (sharpen_core/output_folder.py): claimed once, refused when mixed, temp files cleaned."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sharpen_core.errors import DatasetError
from sharpen_core.io import atomic_path
from sharpen_core.output_folder import claim_folder, remove_partial, sample_loader


def _claim(folder: Path, params: dict) -> bool:
    return claim_folder(folder, folder / "record.json", params, lambda p: json.loads(p.read_text()), "maps",
                        [folder / "a", folder / "b"], "*.npz", ignore=("path",))


def test_claim_a_new_folder_then_the_same_parameters_then_others(tmp_path):
    assert _claim(tmp_path, {"scale": 1, "path": "x"}) is True  # nothing there: the caller writes the record
    (tmp_path / "record.json").write_text(json.dumps({"scale": 1, "path": "x"}))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "1.npz").write_bytes(b"")
    assert _claim(tmp_path, {"scale": 1, "path": "moved"}) is False  # ignored key: the same outputs
    with pytest.raises(ValueError, match=r"record.json: this folder holds maps made with other parameters "
                                         r"\(scale: 1 there, 2 now\); use another --out, or delete .* to start fresh"):
        _claim(tmp_path, {"scale": 2, "path": "x"})


def test_outputs_without_a_record_are_refused(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "other.png").write_bytes(b"")
    assert _claim(tmp_path, {"scale": 1}) is True  # files of another kind are not outputs
    (tmp_path / "b" / "1.npz").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"/b: maps without record.json; use another --out"):
        _claim(tmp_path, {"scale": 1})


def test_remove_partial_removes_that_file_s_temp_files_only(tmp_path):
    target, other = tmp_path / "2007_000001.npz", tmp_path / ".2007_000002.npz.abc123.tmp"
    other.write_bytes(b"")
    target.write_bytes(b"done")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_path(target) as tmp:  # a write in progress: its temp file is what a killed run leaves
            tmp.write_bytes(b"half")
            remove_partial(target)
            assert not tmp.exists()
            raise RuntimeError("killed")
    assert other.exists() and target.read_bytes() == b"done"


def test_sample_loader_keeps_order_and_uses_workers_only_beyond_one_batch():
    items = [{"id": i} for i in range(5)]
    loader, workers = sample_loader(items, 8, 4)  # type: ignore[arg-type]
    assert workers == 0 and [[s["id"] for s in b] for b in loader] == [[0, 1, 2, 3, 4]]
    loader, workers = sample_loader(items, 2, 2)  # type: ignore[arg-type]
    assert workers == 2 and loader.num_workers == 2 and loader.batch_size == 2
    assert isinstance(loader, torch.utils.data.DataLoader)
