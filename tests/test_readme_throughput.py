"""scripts/update_readme_throughput.py: the benchmark's output goes into the README verbatim, between
the markers, with how it was measured; an output without its summary line changes nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "update_readme_throughput.py"
OUTPUT = """96 JPEGs; overrides: none
loop        size  batch  threads  loop img/s  bare img/s   ratio  bare before/after  loadavg
classify      64     32        2        81.9       156.0   0.52x     157.0/155.0     1.03
summary: classify_over_bare=0.52x segment_over_bare=0.95x
"""


def _readme(tmp_path: Path) -> Path:
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\nbefore\n<!-- throughput:begin -->\nold\n<!-- throughput:end -->\nafter\n")
    return readme


def test_saved_output_goes_between_the_markers_verbatim(tmp_path):
    readme, saved = _readme(tmp_path), tmp_path / "out.txt"
    saved.write_text(OUTPUT)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--readme", str(readme), "--output", str(saved)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = readme.read_text()
    block = text[text.index("<!-- throughput:begin -->"):text.index("<!-- throughput:end -->")]
    assert "old" not in block and "```\n" + OUTPUT + "```" in block
    assert "`python benchmarks/train_throughput.py`" in block and "scripts/update_readme_throughput.py" in block
    assert text.startswith("# x\n\nbefore\n") and text.endswith("<!-- throughput:end -->\nafter\n")


def test_output_without_its_summary_changes_nothing(tmp_path):
    readme, saved = _readme(tmp_path), tmp_path / "out.txt"
    saved.write_text(OUTPUT.rsplit("summary", 1)[0])
    before = readme.read_text()
    proc = subprocess.run([sys.executable, str(SCRIPT), "--readme", str(readme), "--output", str(saved)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "does not end with its 'summary: ...' line" in proc.stderr
    assert readme.read_text() == before


def test_the_repository_readme_has_the_throughput_markers():
    text = (ROOT / "README.md").read_text()
    assert text.count("<!-- throughput:begin -->") == 1 and text.count("<!-- throughput:end -->") == 1
