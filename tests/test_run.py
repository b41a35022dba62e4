"""`sharpen run` on the quick config: builds the small built-in dataset, checks it, records the run."""

from __future__ import annotations

import json

from pipeline.cli import main


def test_quick_run_writes_records_and_skips_on_rerun(tmp_path, capsys):
    data_root = tmp_path / "data"
    run_dir = tmp_path / "run"
    args = ["run", "--config", "configs/quick.toml", "--run-dir", str(run_dir), "--quiet",
            "--set", f"data.root={data_root}"]
    assert main(args) == 0
    record = json.loads((run_dir / "run.json").read_text())
    assert record["stages"]["data"]["status"] == "done" and record["stages"]["data"]["wall_seconds"] > 0
    summary = json.loads((run_dir / "data" / "summary.json").read_text())
    assert summary["summary"]["splits"]["train"]["images"] == summary["built"]["splits"]["train"]
    assert (run_dir / "config.toml").is_file() and (data_root / "builtin.json").is_file()
    capsys.readouterr()
    assert main(args) == 0
    assert "[data] up to date" in capsys.readouterr().out
    # the same run folder with another [data] config is refused
    assert main([*args[:-1], f"data.root={tmp_path / 'other'}"]) == 2
    assert "made with another [data] config" in capsys.readouterr().err
