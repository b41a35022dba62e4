"""What each report figure must hold, checked against report.json: a test helper (tests/test_figures.py,
tests/test_run.py), not a test."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import numpy as np
from PIL import Image


# --------------------------------------------------------------------------- what each CSV must hold

def _v(x):
    """A report.json number as the CSV must give it back (None: empty cell)."""
    return None if x is None else float(x)


def expected_csv_rows(report: dict, name: str) -> list[tuple]:
    """The numbers of ``report`` that figure ``name`` shows, read straight from report.json's structure."""
    finite = lambda x: isinstance(x, (int, float)) and math.isfinite(x)  # noqa: E731
    rows = report["rows"]
    if name == "tau_curves":
        out = []
        for r in rows:
            c = r.get("tau_curve") or {}
            std = c.get("miou_std")
            out += [(r["label"], _v(t), _v(m), _v(std[i]) if std else None) for i, (t, m) in
                    enumerate(zip(c.get("tau") or [], c.get("miou") or []))]
        for f in report.get("floors") or []:  # the floors' reference lines, after the rows
            c = f.get("tau_curve") or {}
            std = c.get("miou_std")
            out += [(f"{f['name']} (floor)", _v(t), _v(m), _v(std[i]) if std else None) for i, (t, m) in
                    enumerate(zip(c.get("tau") or [], c.get("miou") or []))]
        return out
    if name == "per_class_iou":
        series = [(r["label"], r["per_class_iou"], r.get("per_class_iou_std") or {}) for r in rows]
        series.append(("full supervision", report["full_per_class_iou"],
                       report["full_supervision"].get("full_per_class_iou_std") or {}))
        series = [s for s in series if any(finite(v) for v in s[1].values())]
        classes = []
        for _, d, _ in series:
            classes += [c for c, v in d.items() if c not in classes and finite(v)]
        return [(label, c, _v(d[c]), _v(sd.get(c))) for label, d, sd in series for c in classes if finite(d.get(c))]
    if name == "seed_precision_recall":
        return [(r["label"], _v(r["seed_precision"]), _v(r["seed_precision_std"]), _v(r["seed_recall"]),
                 _v(r["seed_recall_std"])) for r in rows
                if finite(r.get("seed_precision")) or finite(r.get("seed_recall"))]
    if name == "classification_ap":
        cls = report["classifiers"]
        classes = []
        for c in cls.values():
            classes += [k for k, v in c["per_class_ap"].items() if k not in classes and finite(v)]
        out = [(v, k, _v(c["per_class_ap"][k]), _v((c["per_class_ap_std"] or {}).get(k)))
               for v, c in cls.items() for k in classes if finite(c["per_class_ap"].get(k))]
        return out + [(v, "mAP", _v(c["map"]), _v(c["map_std"])) for v, c in cls.items() if finite(c["map"])]
    if name in ("training_classify", "training_segment"):
        out = []
        for model, c in report["training"][name.split("_")[1]].items():
            for term, values in c["terms"].items():
                stds = (c.get("terms_std") or {}).get(term)
                out += [(model, term, _v(x), _v(v), _v(stds[i]) if stds else None)
                        for i, (x, v) in enumerate(zip(c["x"], values))]
        return out
    if name == "stages":
        return [(n, _v(s["wall_seconds"]), _v(s["wall_seconds_std"]), _v(s["peak_rss_mib"]), _v(s["peak_rss_mib_std"]))
                for n, s in report["stages"].items()
                if finite(s.get("wall_seconds")) or finite(s.get("peak_rss_mib"))]
    raise KeyError(name)


def read_csv_rows(path: Path, width: int) -> list[tuple]:
    """The CSV's rows, text columns kept, number columns parsed (empty: None), the first ``width`` columns."""
    with open(path, newline="") as f:
        lines = list(csv.reader(f))
    out = []
    for line in lines[1:]:
        cells = []
        for cell in line[:width]:
            try:
                cells.append(float(cell) if cell != "" else None)
            except ValueError:
                cells.append(cell)
        out.append(tuple(cells))
    return out


def check_figures(run_dir: Path, report: dict, expect: set[str] | None = None) -> list[str]:
    """Every figure of ``report["figures"]`` as PNG (opens) and PDF (a page), its CSV = its report.json numbers."""
    drawn = [k for k, v in report["figures"].items() if v]
    assert drawn, report.get("notes")
    if expect is not None:
        assert set(drawn) >= expect, report["notes"]
    for key in drawn:
        png = run_dir / report["figures"][key]
        pdf = png.with_suffix(".pdf")
        with Image.open(png) as im:
            im.load()
            arr = np.asarray(im.convert("RGB"))
        assert arr.shape[0] > 100 and arr.shape[1] > 100 and len(np.unique(arr.reshape(-1, 3), axis=0)) > 8, key
        data = pdf.read_bytes()
        assert data.startswith(b"%PDF") and re.search(rb"/Type\s*/Page[^s]", data), key
        if key == "attention_grid":
            continue
        expected = expected_csv_rows(report, key)
        assert expected, key
        got = read_csv_rows(png.with_suffix(".csv"), len(expected[0]))
        assert got == expected, key
    return drawn
