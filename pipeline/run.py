"""``sharpen run``: the stages in order, each writing its outputs, config and timings under the run folder.

This version runs the data stage (build the built-in dataset when the config asks for it,
then check every file of it) and records the stages it does not chain yet (classify and cues
run by hand with their own commands; segment and the report are to come). A rerun skips a finished stage whose config section is unchanged.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import Any

from data.errors import DatasetError
from data.io import write_bytes_atomic, write_json_atomic

from .config import Config, ConfigError, dump_toml

PLANNED_STAGES = ("classify", "cues", "segment", "report")  # not yet chained by `sharpen run`


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _dataset_complete(root: Path) -> bool:
    return (root / "builtin.json").is_file()


def run_data_stage(cfg: Config, stage_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Build the built-in dataset if asked and missing, then check it; write ``data/summary.json``."""
    from data.check import check_dataset, format_summary

    root = Path(cfg.data.root)
    config_hash = cfg.section_hash("data")
    done = stage_dir / "summary.json"
    if done.is_file():
        previous = json.loads(done.read_text())
        if previous.get("config_hash") == config_hash and Path(previous["summary"]["root"]).exists():
            print(f"[data] up to date ({done}), skipped")
            return previous
    start = time.perf_counter()
    built = None
    if cfg.data.builtin:
        from data.builtin import build_builtin_dataset

        built = build_builtin_dataset(root, seed=cfg.data.builtin_seed, size=cfg.data.builtin_size,
                                      workers=None, progress=progress)
    elif not root.exists():
        raise DatasetError(root, "dataset folder not found; set data.root to a VOC2012 folder, or "
                                 "data.builtin = true to build the built-in dataset there")
    splits = [cfg.data.train_split, cfg.data.val_split, cfg.data.test_split]
    summary = check_dataset(root, splits=list(dict.fromkeys(splits)), progress=progress)
    print(format_summary(summary))
    result = {
        "stage": "data",
        "config_hash": config_hash,
        "config": cfg.to_dict()["data"],
        "built": built,
        "summary": summary,
        "wall_seconds": time.perf_counter() - start,
        "peak_rss_mib": _peak_rss_mib(),
    }
    write_json_atomic(done, result)
    return result


def run_pipeline(cfg: Config, progress: bool = True) -> dict[str, Any]:
    """Run every available stage in order under ``cfg.run.run_dir``; return the run record."""
    run_dir = Path(cfg.run.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    record_path = run_dir / "run.json"
    if record_path.is_file():
        previous = json.loads(record_path.read_text())
        if previous.get("config_hash_data") not in (None, cfg.section_hash("data")):
            raise ConfigError(f"{run_dir}: this run folder was made with another [data] config; "
                              "use a new --run-dir, or delete the folder to start fresh")
    write_bytes_atomic(run_dir / "config.toml", dump_toml(cfg).encode())
    stages: dict[str, Any] = {}
    start = time.perf_counter()
    print("[1/1] data")
    data = run_data_stage(cfg, run_dir / "data", progress=progress)
    stages["data"] = {"wall_seconds": data["wall_seconds"], "peak_rss_mib": data["peak_rss_mib"],
                      "status": "done"}
    for name in PLANNED_STAGES:
        stages[name] = {"status": "not chained by `sharpen run` in this version"}
    print("not yet chained by `sharpen run` in this version: " + ", ".join(PLANNED_STAGES)
          + " (run `sharpen classify` and `sharpen cues` by hand; segment and report are to come)")
    record = {
        "name": cfg.run.name,
        "config_source": cfg.source,
        "config_hash_data": cfg.section_hash("data"),
        "stages": stages,
        "wall_seconds": time.perf_counter() - start,
        "peak_rss_mib": _peak_rss_mib(),
    }
    write_json_atomic(record_path, record)
    print(f"run record: {record_path}")
    return record
