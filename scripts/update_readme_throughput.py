"""Run benchmarks/train_throughput.py and write what it printed into README.md between its markers.

    .venv/bin/python scripts/update_readme_throughput.py [--readme README.md] [--output FILE] [-- BENCHMARK ARGS]

The benchmark runs in a subprocess with this Python; its whole output goes into the README, with
the command, the date and the machine's core count and load average before the run (a ratio
measured under load says so). ``--output FILE`` writes the block from a saved output of the
benchmark instead of running it (the file must end with its ``summary:`` line).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.readme import update_readme_table  # noqa: E402

BEGIN, END = "<!-- throughput:begin -->", "<!-- throughput:end -->"
BENCHMARK = "benchmarks/train_throughput.py"


def _load() -> str:
    path = Path("/proc/loadavg")
    return path.read_text().split()[0] if path.is_file() else "unknown"


def throughput_block(output: str, command: str, when: str, cores: int | None, load: str) -> str:
    """The README block: how it was measured, then the benchmark's output verbatim."""
    lines = [line.rstrip() for line in output.strip("\n").splitlines()]
    if not lines or not lines[-1].startswith("summary: "):
        raise ValueError(f"the output of {BENCHMARK} does not end with its 'summary: ...' line; "
                         "did the benchmark finish?")
    return (f"`{command}` on {cores or '?'} cores ({when}; load average {load} before it), written by "
            "`scripts/update_readme_throughput.py`:\n\n```\n" + "\n".join(lines) + "\n```\n")


def main(argv: list[str]) -> int:
    if "--" in argv:
        i = argv.index("--")
        argv, bench_args = argv[:i], argv[i + 1:]
    else:
        bench_args = []
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--readme", type=Path, default=ROOT / "README.md")
    p.add_argument("--output", type=Path, help="a saved output of the benchmark (instead of running it)")
    args = p.parse_args(argv)
    command = " ".join(["python", BENCHMARK, *bench_args]) if bench_args else f"python {BENCHMARK}"
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    load = _load()
    if args.output is not None:
        output = args.output.read_text()
        load = "not recorded"
    else:
        proc = subprocess.run([sys.executable, str(ROOT / BENCHMARK), *bench_args], cwd=ROOT,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            print(f"error: {BENCHMARK} exited with {proc.returncode}; the README is unchanged", file=sys.stderr)
            return 1
        output = proc.stdout
    try:
        block = throughput_block(output, command, when, os.cpu_count(), load)
        update_readme_table(args.readme, block, begin=BEGIN, end=END)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
