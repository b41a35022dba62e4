"""The README's generated parts: text between two markers (``<!-- NAME:begin -->`` ... ``<!-- NAME:end -->``)
replaced by what a script computed (scripts/update_readme_*.py), and the main results table from a run's
``report.json``, so the README shows the table as the pipeline wrote it.
"""

from __future__ import annotations

import json
from pathlib import Path

from sharpen_core.errors import DatasetError
from sharpen_core.io import write_bytes_atomic

from .report_md import main_table_markdown


def update_readme_table(readme_path: str | Path, table_md: str, begin: str = "<!-- report-table:begin -->",
                        end: str = "<!-- report-table:end -->") -> None:
    """Replace the text between ``begin`` and ``end`` in the README with ``table_md`` (atomic write).

    Raises :class:`DatasetError` naming the file when a marker is missing, repeated or out of order.
    """
    path = Path(readme_path)
    if not path.is_file():
        raise DatasetError(path, "README not found")
    text = path.read_text()
    for marker in (begin, end):
        count = text.count(marker)
        if count != 1:
            raise DatasetError(path, f"expected the marker {marker!r} exactly once, found it {count} times; "
                               f"put {begin!r} and {end!r} on their own lines where the table goes")
    i, j = text.index(begin), text.index(end)
    if j < i:
        raise DatasetError(path, f"the marker {end!r} comes before {begin!r}")
    new = text[:i + len(begin)] + "\n" + table_md.strip("\n") + "\n" + text[j:]
    write_bytes_atomic(path, new.encode())

def readme_table_from_run(run_dir: str | Path, readme_path: str | Path) -> str:
    """Regenerate the README table from ``run_dir/report.json``; return the table written."""
    path = Path(run_dir) / "report.json"
    if not path.is_file():
        raise DatasetError(path, "no report here; run `sharpen run` to the report stage first")
    table = main_table_markdown(json.loads(path.read_text()))
    update_readme_table(readme_path, table)
    return table
