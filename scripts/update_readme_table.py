"""Write the demo's report table into README.md between its markers, as the pipeline wrote it.

    .venv/bin/python scripts/update_readme_table.py [RUN_DIR] [README]

RUN_DIR defaults to runs/demo (from `sharpen run --config configs/demo.toml`), README to README.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.readme import readme_table_from_run  # noqa: E402


def main(argv: list[str]) -> int:
    run_dir = Path(argv[0]) if argv else Path("runs/demo")
    readme = Path(argv[1]) if len(argv) > 1 else Path("README.md")
    print(readme_table_from_run(run_dir, readme))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
