"""Helpers of the end-to-end tests of ``sharpen run`` (tests/test_run.py, tests/test_lock.py)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from report_data import REQUIRED_ROW_KEYS

ROW_KEYS = set(REQUIRED_ROW_KEYS)  # the measured columns of a report row


def run_args(run_dir: Path, data_root: Path, *extra: str) -> list[str]:
    """``sharpen run`` arguments of the quick config on CPU, quiet, into ``run_dir``."""
    return ["run", "--config", "configs/quick.toml", "--run-dir", str(run_dir), "--quiet", "--device", "cpu",
            "--set", f"data.root={data_root}", *extra]


def report_rows(report: dict) -> dict[tuple, dict]:
    """The report's rows by (classifier, mechanism), with the measured columns only."""
    return {(r["classifier"], r["mechanism"]): {k: r[k] for k in ROW_KEYS} for r in report["rows"]}


def wait_for(path_glob: tuple[Path, str], proc: subprocess.Popen, count: int, timeout: float = 120) -> None:
    """Wait until ``count`` files match the glob in the folder, while ``proc`` runs."""
    folder, pattern = path_glob
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (rc {proc.returncode}) before it could be killed")
        if folder.is_dir() and len(list(folder.glob(pattern))) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {pattern} in {folder} after {timeout} s")


def copy_finished_stages(ref_dir: Path, run_dir: Path, upto: str) -> None:
    """A run folder holding the reference run's stages up to ``upto`` (finished), nothing later."""
    from pipeline.run import STAGES, clear_stages  # the driver's own clearing, as `sharpen run --from` does it
    from sharpen_core.layout import RunLayout

    shutil.copytree(ref_dir, run_dir)
    clear_stages(RunLayout(run_dir), STAGES[STAGES.index(upto) + 1:])
    (run_dir / "run.json").unlink()
