"""The report of ``sharpen run``: ``report.json``, ``report.md`` and ``figures/`` in the run folder.

:func:`report_run` writes all of it from a run folder's JSON files (read back by :mod:`pipeline.collect`):
the report stage of ``sharpen run`` and ``sharpen report --run-dir DIR`` (a redraw, nothing rerun) both
call it. :func:`write_report` takes the ``summary`` (one row per classifier variant × mechanism, the fully
supervised reference, per-stage timings, the config) and writes

* ``report.json`` (:func:`build_report`): the rows with every number, aggregated over seeds by
  :mod:`pipeline.aggregate` (mean, ``<field>_std``, ``<field>_values``), the reference, the stages, the
  config, each classifier's per-class AP (``classifiers``), the loss curves of every classifier and
  segmenter from their ``metrics.json`` (``training``), the floors (``floors``: the cue mIoU of maps that
  do not localize, :func:`pipeline.aggregate.aggregate_floors`), the leaderboard of cue sets and floors by
  cue mIoU (:mod:`pipeline.leaderboard`), the paper's claims judged against the seed spread
  (:mod:`pipeline.claims`), the figures and notes;
* ``report.md``: its markdown (:mod:`pipeline.report_md`);
* ``figures/``: the figures of :mod:`pipeline.figures` (PNG, PDF and a CSV of the numbers each shows)
  and the attention-map grid (:func:`cues.show.show_maps`, PNG and PDF); a figure that cannot be drawn
  is skipped with a note.

The report stage's own row (wall time and peak memory, which its stage record cannot hold yet) is
measured after every figure but the stages one, which is drawn last so that it shows the report stage too:
:class:`OwnStage` carries the stage's start time and its :class:`~pipeline.memory.StagePeak`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from sharpen_core.errors import DatasetError
from sharpen_core.io import write_bytes_atomic, write_json_atomic
from sharpen_core.layout import RunLayout
from sharpen_core.stage_records import StageRecord

from .aggregate import (FULL_FIELDS, aggregate, aggregate_classifiers, aggregate_floors, aggregate_stages,
                        aggregate_training, compare_rows, run_totals, stage_entry)
from .claims import paper_claims
from .collect import collect_summary, read_json_file, run_config, run_seeds
from .leaderboard import leaderboard
from .memory import StagePeak
from .report_md import report_markdown
from .start import aggregate_pretrained

FIGURES_DIR = "figures"


@dataclass
class OwnStage:
    """The report stage's own row of ``report["stages"]``, measured when :meth:`entry` is called."""

    started: float  # time.perf_counter() when the stage began
    peak: StagePeak  # the stage's memory sampler (``sharpen run`` opens one per stage)

    def entry(self) -> dict[str, Any]:
        return stage_entry(time.perf_counter() - self.started, self.peak.peak_mib())


# --------------------------------------------------------------------------- the report.json content

def build_report(summary: dict[str, Any]) -> dict[str, Any]:
    """The ``report.json`` content without figures (pure: no files read or written)."""
    rows, reference, notes = aggregate(summary)
    floors = aggregate_floors(summary)
    seeds = list(summary.get("seeds") or [])
    n_seeds = len(summary.get("per_seed") or []) or 1
    report: dict[str, Any] = {
        "name": summary.get("name"),
        "config_source": summary.get("config_source"),
        "dataset_root": summary.get("dataset_root"),
        "val_split": summary.get("val_split"),
        "cue_split": summary.get("cue_split"),
        "seeds": seeds,
        "n_seeds": n_seeds,
        "rows": rows,
        **{f + suffix: reference[f + suffix] for f in FULL_FIELDS for suffix in ("", "_std", "_values")},
        "full_per_class_iou": reference["full_per_class_iou"],
        "full_supervision": reference,
        "comparison": compare_rows(rows, n_seeds),
        "claims": paper_claims(rows, n_seeds),
        "floors": floors,
        "leaderboard": leaderboard(rows, floors),
        "stages": aggregate_stages(summary),
        **run_totals(summary),
        "submission": summary.get("submission"),
        "config": summary.get("config"),
        "pretrained": aggregate_pretrained(summary),
        "classifiers": aggregate_classifiers(summary),
        "training": aggregate_training(summary, notes),
        "figures": {},
        "notes": notes,
    }
    return report


def write_report(run_dir: str | Path, summary: dict[str, Any], show_grid: bool = True,
                 own_stage: OwnStage | dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``report.json``, ``report.md`` and ``figures/`` under ``run_dir``; return the report.json content.

    ``own_stage`` becomes ``stages["report"]``, after every figure but the stages one: the report stage's
    own wall time and memory (an :class:`OwnStage` measures them then; a dict is the row a run recorded).
    """
    run_dir = Path(run_dir)
    report = build_report(summary)
    fig_dir = run_dir / FIGURES_DIR
    fig_dir.mkdir(parents=True, exist_ok=True)
    figures = draw_figures(report, summary, fig_dir, show_grid, report["notes"], run_dir)
    if own_stage is not None:
        report["stages"]["report"] = own_stage.entry() if isinstance(own_stage, OwnStage) else own_stage
    figures.update(draw_stages_figure(report, fig_dir, report["notes"]))
    report["figures"] = figures
    write_json_atomic(run_dir / "report.json", report)
    write_bytes_atomic(run_dir / "report.md", report_markdown(report).encode())
    return report


def report_run(run_dir: str | Path, cfg: Any = None, seeds: Sequence[int] | None = None,
               own_stage: OwnStage | None = None, each_seed: bool = True) -> dict[str, Any]:
    """Write the report of a run folder from its stages' JSON files (nothing is rerun); return report.json.

    The report stage of ``sharpen run`` calls it with the run's ``cfg`` and ``own_stage`` (its wall time
    and memory); ``sharpen report --run-dir DIR`` without: the config is the folder's ``config.toml`` (its
    source as ``run.json`` recorded it), the report stage's own numbers are those the run recorded (the
    existing ``report.json``, else the stage record), so an unchanged or copied folder gets the same
    ``report.json`` byte for byte. A ``--seeds N`` root folder gets the report over its seeds (and, with
    ``each_seed``, every ``seed-<s>/`` its own).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DatasetError(run_dir, "run folder not found")
    seeds = list(seeds) if seeds is not None else run_seeds(run_dir)
    if seeds is not None and cfg is None:
        summaries = []
        for s in seeds:
            seed_dir = run_dir / f"seed-{s}"
            if each_seed:
                report_run(seed_dir)
            summaries.append(collect_summary(run_config(seed_dir), RunLayout(seed_dir)))
        summary = dict(summaries[0])
        summary["rows"] = [{**r, "maps_dir": f"seed-{seeds[0]}/{r['maps_dir']}" if r.get("maps_dir") else None}
                           for r in summary["rows"]]  # the attention grid shows the first seed's maps
        summary["seeds"] = list(seeds)
        summary["per_seed"] = summaries
        return write_report(run_dir, summary)
    recorded: dict[str, Any] | None = None
    if own_stage is None:
        recorded = ((read_json_file(run_dir / "report.json") or {}).get("stages") or {}).get("report")
        record = StageRecord.read(RunLayout(run_dir).stage_record("report"))
        if recorded is None and record is not None:
            recorded = stage_entry(record.wall_seconds, record.peak_rss_mib)
    cfg = cfg if cfg is not None else run_config(run_dir)
    return write_report(run_dir, collect_summary(cfg, RunLayout(run_dir), skip_stages=("report",)),
                        own_stage=own_stage if own_stage is not None else recorded)


# --------------------------------------------------------------------------- figures

def draw_figures(report: dict[str, Any], summary: dict[str, Any], fig_dir: Path, show_grid: bool,
                 notes: list[str], run_dir: Path | None = None) -> dict[str, str | None]:
    """Draw every figure but the stages one into ``fig_dir``; return their PNG paths relative to the run
    folder (None: not drawn).

    The data figures come from ``report`` alone (:mod:`pipeline.figures`); the attention grid from the
    rows' extraction folders (``maps_dir``, relative to ``run_dir`` unless absolute).
    """
    from .figures import FIGURE_TITLES, draw_data_figures

    drawn = draw_data_figures(report, fig_dir, notes, skip=("stages",))
    figures: dict[str, str | None] = {key: drawn.get(key) for key, _ in FIGURE_TITLES}
    figures["attention_grid"] = _attention_grid(report, summary, fig_dir, show_grid, notes,
                                                Path(run_dir) if run_dir is not None else fig_dir.parent)
    return figures


def draw_stages_figure(report: dict[str, Any], fig_dir: Path, notes: list[str]) -> dict[str, str | None]:
    """The stages figure (drawn last, once the report stage's own row is in ``report["stages"]``)."""
    from .figures import draw_data_figures

    return draw_data_figures(report, fig_dir, notes, only=("stages",))


def _attention_grid(report: dict[str, Any], summary: dict[str, Any], fig_dir: Path, show_grid: bool,
                    notes: list[str], base: Path) -> str | None:
    """The grid of attention maps (PNG, and PDF of the same picture); None with a note when not drawn."""
    if not show_grid:
        notes.append("figure attention_grid.png not drawn: turned off")
        return None
    dirs = list(dict.fromkeys(str(r["maps_dir"]) for r in report["rows"] if r.get("maps_dir")))
    dirs = [str(base / d) for d in dirs if (base / d).is_dir()]
    if not dirs:
        notes.append("figure attention_grid.png not drawn: no row has an extraction folder (maps_dir) on disk")
        return None
    try:
        import numpy as np
        from PIL import Image

        from cues.show import show_maps
        from sharpen_core.config import config_from_dict
        from sharpen_core.plots import image_pdf

        raw = json.loads(json.dumps(summary.get("config") or {}))
        if summary.get("dataset_root"):
            raw.setdefault("data", {})["root"] = str(summary["dataset_root"])
        cfg = config_from_dict(raw, source=str(summary.get("config_source") or "<report>"))
        show_maps(cfg, fig_dir / "attention_grid.png", maps_dirs=dirs, count=4)
        with Image.open(fig_dir / "attention_grid.png") as im:
            image_pdf(np.asarray(im.convert("RGB")), fig_dir / "attention_grid.pdf")
        return f"{FIGURES_DIR}/attention_grid.png"
    except Exception as e:  # a figure must never cost the report
        notes.append(f"figure attention_grid.png not drawn: {type(e).__name__}: {e}")
        return None
