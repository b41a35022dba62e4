#!/usr/bin/env bash
# training-time CRF scale on val: SEC segmenters of study seed 0 retrained with crf_train_scale 12 (SEC) and "grid" (30.75 on 16x16)
set -euo pipefail
cd "$(dirname "$0")/../.."
R=runs/study/seed-0
O=runs/pilot_crf_train
ROOT=$(.venv/bin/python -c "import tomllib;print(tomllib.load(open('$R/config.toml','rb'))['data']['root'])")
mkdir -p $O results/crf_train_scale_val
for cue in baseline/gradcam baseline/channel; do
  name=${cue/\//-}
  .venv/bin/sharpen eval segmentation --quiet --pred $R/predict/$name/val/pred_crf --root $ROOT --split val --json results/crf_train_scale_val/$name-train-8-study.json >/dev/null
  .venv/bin/sharpen eval segmentation --quiet --pred $R/predict/$name/val/pred --root $ROOT --split val --json results/crf_train_scale_val/$name-train-8-study-nocrf.json >/dev/null
  scales="12.0 \"grid\""; [ $name = baseline-gradcam ] && scales="8.0 $scales"
  for s in $scales; do
    tag=$(echo $s | tr -d '"' | sed 's/\.0$//')
    out=$O/$name-$tag
    [ -f $out/val/predict.json ] || {
      .venv/bin/sharpen segment train --quiet --config $R/config.toml --cues $R/cues/$cue/train/sec --out $out/seg --set segment.crf_train_scale=$s
      .venv/bin/sharpen segment predict --quiet --config $R/config.toml --checkpoint $out/seg/checkpoint.pt --split val --crf both --out $out/val
    }
    .venv/bin/sharpen eval segmentation --quiet --pred $out/val/pred_crf --root $ROOT --split val --json results/crf_train_scale_val/$name-train-$tag.json >/dev/null
    .venv/bin/sharpen eval segmentation --quiet --pred $out/val/pred --root $ROOT --split val --json results/crf_train_scale_val/$name-train-$tag-nocrf.json >/dev/null
  done
done
