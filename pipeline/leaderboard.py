"""The leaderboard of attention mechanisms as localization cues (docs/method.md §1, §6).

Every report row with cues (one per cue set ``"<classifier variant>:<mechanism>"``: the native
mechanisms and the pytorch-grad-cam ones run through :mod:`sharpen_attention.gradcam_adapter`), sorted by the cues'
best pseudo-label mIoU (mean over seeds), best first; rows without a cue mIoU come last. Each entry
names the mechanism's kind: where it comes from and how it weighs the feature map (its entry in
:data:`sharpen_attention.mechanisms.REGISTRY`).

The floors (docs/method.md §6.2: maps that do not localize, made from each image's labels alone) are
listed among the cue sets by their cue mIoU, marked as floors (``floor: True``, kind ``floor: ...``,
no rank, no classifier), so every cue set is read against them: ``cue_gain_over_floor`` is a cue set's
cue mIoU minus the best floor's (per seed, then mean ± sd: :mod:`pipeline.aggregate`).
"""

from __future__ import annotations

from typing import Any, Sequence

from .numbers import finite_number as _number

COLUMNS = (("cue_miou", "cue mIoU"), ("cue_gain_over_floor", "gain over floor"), ("cue_best_tau", "τ*"),
           ("seed_precision", "seed P"), ("seed_recall", "seed R"), ("seed_precision_at_tau", "seed P@τ*"),
           ("seed_recall_at_tau", "seed R@τ*"), ("seg_miou_crf", "seg mIoU+CRF"))
# Columns a leaderboard written before they were measured lacks (shown only when an entry has the key).
NEW_COLUMNS = frozenset({"cue_gain_over_floor", "seed_precision_at_tau", "seed_recall_at_tau"})
# The floors' kinds (cues.quality.FLOORS), as the tables name them.
FLOOR_KINDS: dict[str, str] = {"floor-uniform": "floor: labels over the whole image",
                               "floor-centre": "floor: centred prior"}
# A floor's numbers as pipeline.aggregate.aggregate_floors names them -> the leaderboard's column.
FLOOR_COLUMNS: dict[str, str] = {"cue_miou": "best_miou", "cue_best_tau": "best_tau", "seed_precision": "seed_precision",
                                 "seed_recall": "seed_recall", "seed_precision_at_tau": "seed_precision_at_tau",
                                 "seed_recall_at_tau": "seed_recall_at_tau"}
TAU_EDGE_NOTE = ("the best cue mIoU is reached only at an end of the τ sweep (`eval.tau_min`..`eval.tau_max`, "
                 "0..1 by default), in at least one seed: at τ = 0 every pixel where a map is positive is foreground (no threshold "
                 "is low enough for these maps), at τ = 1 every pixel is background (these maps do worse than no "
                 "foreground at all). A curve flat from an end inwards, as the uniform floor's, is not flagged.")
FLOOR_NOTE = ("Floors: the cue mIoU of maps that do not localize, made from each image's ground-truth labels "
              "alone (floor-uniform: every label over the whole image; floor-centre: a centred Gaussian for every "
              "label), scored like the cue sets; gain over floor = a cue set's cue mIoU minus the best floor's.")
SEED_NOTE = ("Seed P/R: the SEC seeds' precision and recall at SEC's fixed foreground threshold "
             "(`cues.fg_threshold`, the protocol); seed P@τ*/R@τ*: the same seeds with the threshold at the "
             "maps' own best τ.")


def mechanism_kind(mechanism: str | None) -> str:
    """Where ``mechanism`` comes from and how it weighs the features: its registry entry's description."""
    from sharpen_attention.mechanisms import REGISTRY  # torch: only when a board is drawn

    entry = REGISTRY.get(str(mechanism))
    return entry.description if entry is not None else "unknown"


def floor_kind(name: str) -> str:
    """How a floor's maps are made (:data:`FLOOR_KINDS`; ``"floor"`` for a name it lacks)."""
    return FLOOR_KINDS.get(str(name), "floor")


def leaderboard(rows: Sequence[dict[str, Any]], floors: Sequence[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """Rows with a mechanism and the ``floors`` (``report["floors"]``), sorted by cue mIoU (best first; ties
    and missing values keep the order, rows before floors); the rows ranked 1, 2, ..., the floors unranked."""
    entries = []
    for order, r in enumerate(rows):
        if r.get("mechanism") is None:
            continue
        entry = {"classifier": r.get("classifier"), "mechanism": r.get("mechanism"),
                 "kind": mechanism_kind(r.get("mechanism")), "floor": False}
        for f, _ in COLUMNS:
            entry[f], entry[f + "_std"] = _number(r.get(f)), _number(r.get(f + "_std"))
        entry["cue_tau_at_edge"] = bool(r.get("cue_tau_at_edge"))
        entries.append((order, entry))
    for order, fl in enumerate(floors, len(rows)):
        entry = {"classifier": None, "mechanism": fl.get("name"), "kind": floor_kind(fl.get("name")), "floor": True}
        for f, _ in COLUMNS:
            source = FLOOR_COLUMNS.get(f)
            entry[f] = None if source is None else _number(fl.get(source))
            entry[f + "_std"] = None if source is None else _number(fl.get(source + "_std"))
        entry["cue_tau_at_edge"] = bool(fl.get("tau_at_edge"))
        entries.append((order, entry))
    entries.sort(key=lambda oe: (oe[1]["cue_miou"] is None, -(oe[1]["cue_miou"] or 0.0), oe[0]))
    ranks = iter(range(1, len(entries) + 1))
    return [{"rank": None if e["floor"] else next(ranks), **e} for _, e in entries]


def leaderboard_markdown(board: Sequence[dict[str, Any]]) -> str:
    """The leaderboard as a markdown table (percentages with 1 decimal, τ with 2, ``± sd`` over seeds; ⚠: the
    best mIoU reached only at an end of the τ sweep, with a note under the table; floors marked by their kind,
    ``–`` for rank and classifier). The columns of :data:`NEW_COLUMNS` show when some entry has them (a board
    written before they were measured keeps its columns)."""
    if not board:
        return "No cue sets in this run.\n"
    columns = [(f, t) for f, t in COLUMNS if f not in NEW_COLUMNS or any(f in e for e in board)]
    lines = ["| rank | classifier | mechanism | kind | " + " | ".join(t for _, t in columns) + " |",
             "|---:|---|---|---|" + "---:|" * len(columns)]
    for e in board:
        cells = []
        for f, _ in columns:
            v, s = e.get(f), e.get(f + "_std")
            scale, digits = (1.0, 2) if f == "cue_best_tau" else (100.0, 1)
            cells.append("–" if v is None else f"{scale * v:.{digits}f}" + (f" ± {scale * s:.{digits}f}"
                                                                            if s is not None else "")
                         + (" ⚠" if f == "cue_best_tau" and e.get("cue_tau_at_edge") else ""))
        rank = "–" if e.get("rank") is None else e["rank"]
        head = f"| {rank} | {e.get('classifier') or '–'} | {e['mechanism']} | {e['kind']} | "
        lines.append(head + " | ".join(cells) + " |")
    notes = []
    if any(e.get("cue_tau_at_edge") for e in board):
        notes.append("⚠ " + TAU_EDGE_NOTE)
    if any(e.get("floor") for e in board):
        notes.append(FLOOR_NOTE)
    if any(f in e for e in board for f in ("seed_precision_at_tau", "seed_recall_at_tau")):
        notes.append(SEED_NOTE)
    for note in notes:
        lines += ["", note]
    return "\n".join(lines) + "\n"
