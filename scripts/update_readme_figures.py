"""Copy the demo's τ-curve and per-class figures into docs/figures/ and show them in README.md.

    .venv/bin/python scripts/update_readme_figures.py [RUN_DIR] [README]

RUN_DIR defaults to runs/demo (from `sharpen run --config configs/demo.toml`), README to README.md.
The PNG, PDF and CSV of each figure in README_FIGURES are copied from RUN_DIR/figures/ to
docs/figures/ beside the README, and the text between the README's `report-figures` markers is
replaced by the images and the run they come from (its name, config and seeds from report.json).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.figures import FIGURE_TITLES  # noqa: E402
from pipeline.readme import update_readme_table  # noqa: E402

README_FIGURES = ("tau_curves", "per_class_iou")
BEGIN, END = "<!-- report-figures:begin -->", "<!-- report-figures:end -->"


def copy_figures(run_dir: Path, readme: Path, names: tuple[str, ...] = README_FIGURES) -> str:
    """Copy the figures, write the README block; return the block."""
    report_path = run_dir / "report.json"
    if not report_path.is_file():
        raise FileNotFoundError(f"{report_path}: no report here; run `sharpen run` (or `sharpen report`) first")
    report = json.loads(report_path.read_text())
    out_dir = readme.parent / "docs" / "figures"
    out_dir.mkdir(parents=True, exist_ok=True)
    titles = dict(FIGURE_TITLES)
    seeds = report.get("seeds") or []
    lines = [f"From `{report.get('config_source')}` (run `{report.get('name')}`, seed(s) "
             f"{', '.join(map(str, seeds)) or '–'}), copied by `scripts/update_readme_figures.py`; each figure "
             "also as PDF and as CSV of its numbers in `docs/figures/`.", ""]
    for name in names:
        rel = (report.get("figures") or {}).get(name)
        if not rel:
            raise FileNotFoundError(f"{report_path}: figure {name!r} was not drawn (see the report's notes)")
        for ext in (".png", ".pdf", ".csv"):
            src = (run_dir / rel).with_suffix(ext)
            if src.is_file():
                shutil.copyfile(src, out_dir / src.name)
        lines += [f"![{titles.get(name, name)}](docs/figures/{name}.png)", ""]
    block = "\n".join(lines).rstrip("\n") + "\n"
    update_readme_table(readme, block, BEGIN, END)
    return block


def main(argv: list[str]) -> int:
    run_dir = Path(argv[0]) if argv else Path("runs/demo")
    readme = Path(argv[1]) if len(argv) > 1 else Path("README.md")
    print(copy_figures(run_dir, readme))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
