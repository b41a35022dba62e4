"""Write the built-in dataset's statistics next to VOC 2012's into README.md between its markers.

    .venv/bin/python scripts/update_readme_stats.py [--root builtin_data/default] [--json FILE ...] [--readme README.md]

With ``--root`` (default ``builtin_data/default``, built by ``sharpen data build --out DIR``) it
computes the statistics of the train and val splits as ``sharpen data stats`` does; with
``--json`` it reads files written by ``sharpen data stats --json FILE`` instead (one per split).
The VOC 2012 column holds published figures, each with its source (``data/stats.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data.stats import dataset_stats, readme_stats_table  # noqa: E402
from pipeline.readme import update_readme_table  # noqa: E402

BEGIN, END = "<!-- dataset-stats:begin -->", "<!-- dataset-stats:end -->"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=Path("builtin_data/default"), help="built-in dataset folder")
    p.add_argument("--json", type=Path, action="append", default=[], help="a `sharpen data stats --json` file")
    p.add_argument("--readme", type=Path, default=Path("README.md"))
    args = p.parse_args(argv)
    if args.json:
        stats = [json.loads(f.read_text()) for f in args.json]
    else:
        stats = [dataset_stats(args.root, split, progress=False) for split in ("train", "val")]
    root = Path(stats[0]["root"])
    manifest = root / "builtin.json"
    note = ""
    if manifest.is_file():
        m = json.loads(manifest.read_text())
        note = (f"Built-in dataset: `sharpen data build --size {m['size']} --seed {m['seed']}` (generator version "
                f"{m['version']}), measured with `sharpen data stats`; regenerate with "
                "`.venv/bin/python scripts/update_readme_stats.py`.\n\n")
    table = note + readme_stats_table({s["split"]: s for s in stats},
                                      class_count=len(m["class_ids"]) if manifest.is_file() else None)
    update_readme_table(args.readme, table, begin=BEGIN, end=END)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
