"""Write the study's findings into README.md between its markers, from the run's report.json, never by hand.

    .venv/bin/python scripts/update_readme_findings.py RUN_DIR [--readme README.md] [--results results/study]

Reads RUN_DIR/report.json (from `sharpen run --config configs/study.toml --seeds 3`), writes one bullet
per claim of the paper (its verdict, and each comparison's mean ± sd over seeds, gain and threshold;
pipeline/claims.py) between `<!-- findings:begin -->` and `<!-- findings:end -->` in the README, and
copies report.json, report.md and the figures it shows to the results folder so the README's numbers can be
checked there.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sharpen_core.io import write_bytes_atomic  # noqa: E402
from pipeline.claims import findings_markdown  # noqa: E402
from pipeline.readme import update_readme_table  # noqa: E402

BEGIN, END = "<!-- findings:begin -->", "<!-- findings:end -->"


def update_findings(run_dir: Path, readme: Path, results: Path) -> str:
    """Write the findings block into ``readme`` and copy the report to ``results``; return the block."""
    path = run_dir / "report.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no report here; run `sharpen run --config configs/study.toml --seeds 3` "
                                "first")
    try:
        report = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path}: not a JSON report ({e})") from None
    block = findings_markdown(report)
    update_readme_table(readme, block, begin=BEGIN, end=END)
    for name in ("report.json", "report.md"):
        source = run_dir / name
        if source.is_file():
            write_bytes_atomic(results / name, source.read_bytes())
    figures = run_dir / "figures"  # what report.md links to, so the copy reads as the original does
    if figures.is_dir():
        for source in sorted(figures.iterdir()):
            if source.is_file() and source.suffix in (".png", ".pdf", ".csv"):
                write_bytes_atomic(results / "figures" / source.name, source.read_bytes())
    return block


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path, help="the study's run folder (holds report.json)")
    p.add_argument("--readme", type=Path, default=Path("README.md"))
    p.add_argument("--results", type=Path, default=Path("results/study"),
                   help="where report.json and report.md are copied (kept in the repository)")
    args = p.parse_args(argv)
    try:
        print(update_findings(args.run_dir, args.readme, args.results))
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
