#!/usr/bin/env bash
# GPU check: the CUDA-only tests (`pytest -m gpu`), then configs/quick.toml on CUDA with AMP, printing each
# stage's wall time and throughput.
# Usage (from the repository root, on a machine with an NVIDIA GPU):
#   bash scripts/gpu_check.sh [RUN_DIR]
# It installs the project with its test tools into .venv if needed, refuses to run without CUDA, runs the
# tests marked `gpu` (skipped everywhere else, CI included), and prints a table from the run's stage
# records (RUN_DIR/stages/*.json) and report.json.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR="${1:-runs/gpu_check}"
test -d .venv || python3 -m venv .venv
.venv/bin/pip install -q -e '.[test]'
.venv/bin/python - <<'PY'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("gpu_check: CUDA is not available on this machine (torch %s)" % torch.__version__)
print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| CUDA", torch.version.cuda)
PY
.venv/bin/python -m pytest -q -p no:xdist -m gpu -rs
rm -rf "$RUN_DIR"; mkdir -p "$(dirname "$RUN_DIR")"
TIME=(); if [ -x /usr/bin/time ]; then TIME=(/usr/bin/time -v); fi
"${TIME[@]}" .venv/bin/sharpen run --config configs/quick.toml --run-dir "$RUN_DIR" --device cuda \
    --set classify.amp=true --set segment.amp=true --quiet 2> "$RUN_DIR.time.txt" || { cat "$RUN_DIR.time.txt"; exit 1; }
grep -E "Elapsed|Maximum resident" "$RUN_DIR.time.txt" || true
.venv/bin/python - "$RUN_DIR" <<'PY'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
cfg = json.loads((run / "report.json").read_text())["config"]
d = cfg["data"]
images = {}
summary = json.loads((run / "data" / "summary.json").read_text())["summary"]["splits"]
n_train, n_val = summary[d["train_split"]]["images"], summary[d["val_split"]]["images"]
c, s = cfg["classify"], cfg["segment"]
n_cls = len(c["variants"])
n_sets = len(cfg["run"]["cue_sets"])
n_seg = n_sets + (1 if cfg["run"]["full_supervision"] else 0)
work = {  # units of work per stage, for a throughput figure
    "classify": (n_cls * min(n_train // c["batch_size"], c["max_batches_per_epoch"] or 10**9) * c["batch_size"] * c["epochs"], "train images"),
    "cues": (n_sets * n_train, "images (extract+sec+score)"),
    "segment": (n_seg * s["iterations"] * s["batch_size"], "train images"),
    "predict": (n_seg * n_val, "val images"),
}
print(f"{'stage':<10} {'wall s':>8} {'peak MiB':>9}  throughput")
for stage in ("data", "classify", "cues", "segment", "predict", "report"):
    rec = json.loads((run / "stages" / f"{stage}.json").read_text())
    n, unit = work.get(stage, (0, ""))
    tp = f"{n / rec['wall_seconds']:.1f} {unit}/s" if n else ""
    print(f"{stage:<10} {rec['wall_seconds']:8.2f} {rec['peak_rss_mib']:9.0f}  {tp}")
PY
