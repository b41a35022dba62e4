"""``sharpen classify evaluate``: per-class AP and mAP, macro AUC, top-1/top-5 (single-label), the KS
distance between target and most-confusing class probabilities, and the mean attention overlap
(L_AS, Eq. 3, on the evaluation split) of each mechanism as a measure of attention separability.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm import tqdm

from sharpen_core.stage_records import EvaluationRecord
from eval.classification import classification_report, ks_distance, target_and_confusing_probs, topk_accuracy
from sharpen_attention.attention import AttentionExtractor
from sharpen_attention.classifiers import build_classifier, check_checkpoint
from sharpen_core.checkpoints import load_checkpoint
from sharpen_core.config import Config
from sharpen_core.device import resolve_device

from .data import SeededDataset, build_dataset, classification_transform, collate
from .icasc import attention_separation_loss, target_region
from .train import _dataset_args, icasc_classes


def attention_overlap(maps_last: torch.Tensor, classes: torch.Tensor, sigma: float, omega: float) -> torch.Tensor:
    """Per-image mean L_AS of the last layer over its targets (column 0 of ``classes`` is the confusing class)."""
    valid = classes[:, 1:] >= 0
    b_idx, g_idx = valid.nonzero(as_tuple=True)
    t, conf = maps_last[b_idx, g_idx + 1], maps_last[b_idx, 0]
    per_pair = attention_separation_loss(t, conf, target_region(t, sigma, omega))
    per_image = torch.zeros(classes.shape[0]).index_add(0, b_idx.cpu(), per_pair.cpu())
    return per_image / valid.sum(1).clamp(min=1).cpu()


def evaluate_classifier(cfg: Config, checkpoint: str | Path, split: str | None = None,
                        mechanisms: Sequence[str] = ("gradcam", "channel"), out_json: str | Path | None = None,
                        progress: bool = True, max_batches: int | None = None) -> dict[str, Any]:
    """Evaluate a trained checkpoint on ``split`` (default: the config's validation split)."""
    c = cfg.classify
    state = load_checkpoint(checkpoint, "a checkpoint.pt written by `sharpen classify train`")
    kind, root, _, val_split = _dataset_args(cfg)
    split = split or val_split
    raw, num_classes, multilabel, class_names = build_dataset(kind, root, split)
    check_checkpoint(state, c.arch, num_classes, checkpoint, c.output_stride)
    device = resolve_device(cfg.run.device)
    model = build_classifier(c.arch, num_classes, output_stride=c.output_stride).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    dataset = SeededDataset(raw, classification_transform(c.image_size, False, cfg.data.mean, cfg.data.std),
                            cfg.run.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=c.batch_size, shuffle=False,
                                         num_workers=cfg.data.num_workers, collate_fn=collate)
    t0 = time.perf_counter()
    logits_all, truth_all = [], []
    overlaps: dict[str, list[torch.Tensor]] = {m: [] for m in mechanisms}
    extractors = {m: AttentionExtractor(model, layers=("last",), mechanism=m) for m in mechanisms}
    for i, batch in enumerate(tqdm(loader, desc=f"evaluate {state.get('variant', '')} on {split}",
                                   disable=not progress, leave=False)):
        if max_batches is not None and i >= max_batches:
            break
        images = batch["image"].to(device)
        logits = None
        for m, extractor in extractors.items():  # each call's forward also gives the logits
            res = extractor(images, classes=lambda lg: icasc_classes(lg, batch, multilabel), normalize=True)
            logits = res.logits if logits is None else logits
            overlaps[m].append(attention_overlap(res.maps["last"].float(), res.classes, c.sigma, c.omega))
        if logits is None:
            with torch.no_grad():
                logits = model(images)
        logits_all.append(logits.float().cpu())
        truth_all.append(batch["label"] if multilabel else batch["target"])
    logits = torch.cat(logits_all)
    truth = torch.cat(truth_all)
    result: dict[str, Any] = {"checkpoint": str(checkpoint), "variant": state.get("variant"), "arch": c.arch,
                              "split": split, "images": int(logits.shape[0])}
    if multilabel:
        probs = torch.sigmoid(logits)
        result.update(classification_report(truth.numpy(), logits.numpy(), probs.numpy(), class_names))
    else:
        probs = torch.softmax(logits, 1)
        acc = topk_accuracy(logits.numpy(), truth.numpy(), ks=(1, 5))
        t, conf = target_and_confusing_probs(probs.numpy(), truth.numpy())
        result.update({"top1": acc[1], "top5": acc[5], "ks_target_vs_confusing": ks_distance(t, conf)})
    result["attention_overlap"] = {m: float(torch.cat(v).mean()) for m, v in overlaps.items() if v}
    result["seconds"] = time.perf_counter() - t0
    if out_json is not None:
        EvaluationRecord.from_json(result).write(out_json)
    return result


def format_evaluation(result: dict[str, Any]) -> str:
    """A printed table: per-class AP, then the summary metrics."""
    lines = [f"{result['variant']} ({result['arch']}) on {result['split']}, {result['images']} images", ""]
    if "per_class_ap" in result:
        lines.append(f"{'class':<14} {'AP':>6}")
        for name, ap in result["per_class_ap"].items():
            lines.append(f"{name:<14} {'-' if ap is None else f'{100 * ap:6.2f}':>6}")
        lines.append("")
        lines.append(f"{'mAP':<14} {100 * result['map']:6.2f}")
        lines.append(f"{'macro AUC':<14} {result['macro_auc']:6.4f}")
    else:
        lines.append(f"{'top-1':<14} {100 * result['top1']:6.2f}")
        lines.append(f"{'top-5':<14} {100 * result['top5']:6.2f}")
    ks = result.get("ks_target_vs_confusing")
    lines.append(f"{'KS(t, conf)':<14} {'-' if ks is None else f'{ks:6.4f}'}")
    for m, v in result.get("attention_overlap", {}).items():
        lines.append(f"{'L_AS ' + m:<14} {v:6.4f}")
    return "\n".join(lines)
