"""The leaderboard of attention mechanisms as localization cues (docs/method.md §1, §6).

Every report row with cues (one per cue set ``"<classifier variant>:<mechanism>"``: the native
mechanisms and the pytorch-grad-cam ones run through :mod:`sharpen_attention.gradcam_adapter`), sorted by the cues'
best pseudo-label mIoU (mean over seeds), best first; rows without a cue mIoU come last. Each entry
names the mechanism's kind: where it comes from and how it weighs the feature map (its entry in
:data:`sharpen_attention.mechanisms.REGISTRY`).
"""

from __future__ import annotations

from typing import Any, Sequence

from .numbers import finite_number as _number

COLUMNS = (("cue_miou", "cue mIoU"), ("cue_best_tau", "τ*"), ("seed_precision", "seed P"),
           ("seed_recall", "seed R"), ("seg_miou_crf", "seg mIoU+CRF"))


def mechanism_kind(mechanism: str | None) -> str:
    """Where ``mechanism`` comes from and how it weighs the features: its registry entry's description."""
    from sharpen_attention.mechanisms import REGISTRY  # torch: only when a board is drawn

    entry = REGISTRY.get(str(mechanism))
    return entry.description if entry is not None else "unknown"


def leaderboard(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with a mechanism, sorted by cue mIoU (best first; ties and missing values keep the row order)."""
    entries = []
    for order, r in enumerate(rows):
        if r.get("mechanism") is None:
            continue
        entry = {"classifier": r.get("classifier"), "mechanism": r.get("mechanism"),
                 "kind": mechanism_kind(r.get("mechanism"))}
        for f, _ in COLUMNS:
            entry[f], entry[f + "_std"] = _number(r.get(f)), _number(r.get(f + "_std"))
        entry["cue_tau_at_edge"] = bool(r.get("cue_tau_at_edge"))
        entries.append((order, entry))
    entries.sort(key=lambda oe: (oe[1]["cue_miou"] is None, -(oe[1]["cue_miou"] or 0.0), oe[0]))
    return [{"rank": k, **e} for k, (_, e) in enumerate(entries, 1)]


def leaderboard_markdown(board: Sequence[dict[str, Any]]) -> str:
    """The leaderboard as a markdown table (percentages with 1 decimal, τ with 2, ``± sd`` over seeds; ⚠: the
    best τ at an edge of the sweep, with a note under the table)."""
    if not board:
        return "No cue sets in this run.\n"
    lines = ["| rank | classifier | mechanism | kind | " + " | ".join(t for _, t in COLUMNS) + " |",
             "|---:|---|---|---|" + "---:|" * len(COLUMNS)]
    for e in board:
        cells = []
        for f, _ in COLUMNS:
            v, s = e.get(f), e.get(f + "_std")
            scale, digits = (1.0, 2) if f == "cue_best_tau" else (100.0, 1)
            cells.append("–" if v is None else f"{scale * v:.{digits}f}" + (f" ± {scale * s:.{digits}f}"
                                                                            if s is not None else "")
                         + (" ⚠" if f == "cue_best_tau" and e.get("cue_tau_at_edge") else ""))
        head = f"| {e['rank']} | {e['classifier']} | {e['mechanism']} | {e['kind']} | "
        lines.append(head + " | ".join(cells) + " |")
    if any(e.get("cue_tau_at_edge") for e in board):
        lines += ["", "⚠ best τ at an edge of the τ sweep (`eval.tau_min`..`eval.tau_max`) in at least one seed: "
                      "these maps' best τ may lie outside it."]
    return "\n".join(lines) + "\n"
