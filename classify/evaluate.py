"""``sharpen classify evaluate``: per-class AP and mAP, macro AUC, top-1/top-5 (single-label), the KS
distance between target and most-confusing class probabilities, the mean attention overlap (L_AS,
Eq. 3, on the evaluation split) of each mechanism at the last and the inner layer as a measure of
attention separability (docs/method.md §2.7), and how far Grad-CAM++ is from channel-weighted attention
at the cue layer (the distribution of ``|g·ΣA|/2``, docs/method.md §6.4).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm import tqdm

from sharpen_core.stage_records import EvaluationRecord
from eval.classification import classification_report, ks_distance, target_and_confusing_probs, topk_accuracy
from sharpen_attention.attention import AttentionExtractor, resolve_layers
from sharpen_attention.classifiers import build_classifier, check_checkpoint
from sharpen_attention.mechanisms import gradcampp_linearity_terms, linearity_summary
from sharpen_core.checkpoints import load_checkpoint
from sharpen_core.config import Config
from sharpen_core.device import resolve_device

from .data import SeededDataset, build_dataset, classification_transform, collate
from .icasc import attention_separation_loss, target_region
from .train import _dataset_args, icasc_classes


OVERLAP_MECHANISMS = ("gradcam", "channel")
"""Always measured (docs/method.md §2.7): Grad-CAM's maps are not those the ``icasc`` variant trains on."""
OVERLAP_LAYERS = ("last", "inner")
LINEARITY_CAP = 2 ** 18
"""At most this many ``|g·ΣA|/2`` entries per batch (evenly strided) enter the quantiles; the max is exact."""


def attention_overlap(maps: torch.Tensor, classes: torch.Tensor, sigma: float, omega: float) -> torch.Tensor:
    """Per-image mean L_AS (Eq. 3) of one layer's maps over the image's targets, with the target region T
    (Eq. 4) from the same maps (column 0 of ``classes`` is the confusing class; docs/method.md §2.7)."""
    valid = classes[:, 1:] >= 0
    b_idx, g_idx = valid.nonzero(as_tuple=True)
    t, conf = maps[b_idx, g_idx + 1], maps[b_idx, 0]
    per_pair = attention_separation_loss(t, conf, target_region(t, sigma, omega))
    per_image = torch.zeros(classes.shape[0]).index_add(0, b_idx.cpu(), per_pair.cpu())
    return per_image / valid.sum(1).clamp(min=1).cpu()


def layer_overlaps(result: Any, sigma: float, omega: float) -> dict[str, torch.Tensor]:
    """Per layer of an :class:`~sharpen_attention.attention.AttentionResult` (max-normalised maps, classes as
    :func:`classify.train.icasc_classes`): the per-image attention overlap, each layer's T from its own maps."""
    return {layer: attention_overlap(maps.float(), result.classes, sigma, omega) for layer, maps in result.maps.items()}


def target_acts_and_grads(model: torch.nn.Module, module_name: str, images: torch.Tensor,
                          classes: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The activations ``A`` of ``module_name`` and the gradients ``g^t = ∂y^t/∂A`` of each image's targets.

    ``classes`` maps the detached logits to (B, 1 + G) as :func:`classify.train.icasc_classes` (column 0,
    the confusing class, is not used). Returns ``(acts (P, K, H, W), grads (P, 1, K, H, W), logits)``, one
    entry per (image, target) pair: the shapes :func:`sharpen_attention.mechanisms.gradcampp_linearity_terms`
    takes. One forward pass, one backward pass per distinct target class of the batch.
    """
    module = dict(model.named_modules())[module_name]
    captured: list[torch.Tensor] = []

    def hook(_: torch.nn.Module, __: object, output: torch.Tensor) -> torch.Tensor:
        if not output.requires_grad:
            output = output.detach().requires_grad_()
        captured.append(output)
        return output.clone()  # downstream in-place ops cannot modify the captured tensor

    handle = module.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = model(images)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise RuntimeError(f"layer {module_name!r} ran {len(captured)} times in one forward pass; expected once")
    acts = captured[0]
    targets = torch.as_tensor(classes(logits.detach()), device=logits.device)[:, 1:]
    b_idx, g_idx = (targets >= 0).nonzero(as_tuple=True)
    cls = targets[b_idx, g_idx]
    grads = acts.new_zeros((len(b_idx), *acts.shape[1:]))
    unique = cls.unique().tolist()
    for j, c in enumerate(unique):
        (g,) = torch.autograd.grad(logits[:, c].sum(), acts, retain_graph=j < len(unique) - 1)
        chosen = cls == c
        grads[chosen] = g[b_idx[chosen]]  # the images are independent in eval mode: row b is ∂y_b^c/∂A_b
    return acts.detach()[b_idx], grads.detach().unsqueeze(1), logits.detach()


def evaluate_classifier(cfg: Config, checkpoint: str | Path, split: str | None = None,
                        mechanisms: Sequence[str] = OVERLAP_MECHANISMS, out_json: str | Path | None = None,
                        progress: bool = True, max_batches: int | None = None) -> dict[str, Any]:
    """Evaluate a trained checkpoint on ``split`` (default: the config's validation split).

    The attention overlap is measured for ``mechanisms`` plus Grad-CAM and channel-weighted attention
    (always), at the last layer (``attention_overlap``) and at the inner one (``attention_overlap_inner``);
    ``gradcampp_linearity`` is the distribution of ``|g·ΣA|/2`` at ``cues.layer`` for the images' targets.
    """
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
    mechanisms = list(dict.fromkeys([*OVERLAP_MECHANISMS, *mechanisms]))
    overlaps: dict[str, dict[str, list[torch.Tensor]]] = {layer: {m: [] for m in mechanisms}
                                                          for layer in OVERLAP_LAYERS}
    extractors = {m: AttentionExtractor(model, layers=OVERLAP_LAYERS, mechanism=m) for m in mechanisms}
    cue_module = resolve_layers(model, cfg.cues.layer)[cfg.cues.layer]
    terms: list[torch.Tensor] = []
    terms_max, terms_count = None, 0
    for i, batch in enumerate(tqdm(loader, desc=f"evaluate {state.get('variant', '')} on {split}",
                                   disable=not progress, leave=False)):
        if max_batches is not None and i >= max_batches:
            break
        images = batch["image"].to(device)

        def classes(lg: torch.Tensor) -> torch.Tensor:
            return icasc_classes(lg, batch, multilabel)

        acts, grads, logits = target_acts_and_grads(model, cue_module, images, classes)
        t = gradcampp_linearity_terms(acts, grads).float().cpu()
        if t.numel():
            terms_max = max(float(t.max()), terms_max or 0.0)
            terms_count += int(t.numel())
            terms.append(t[::-(-t.numel() // LINEARITY_CAP)])
        del acts, grads
        for m, extractor in extractors.items():
            for layer, per_image in layer_overlaps(extractor(images, classes=classes, normalize=True),
                                                   c.sigma, c.omega).items():
                overlaps[layer][m].append(per_image)
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
    result["attention_overlap"] = {m: float(torch.cat(v).mean()) for m, v in overlaps["last"].items() if v}
    result["attention_overlap_inner"] = {m: float(torch.cat(v).mean()) for m, v in overlaps["inner"].items() if v}
    result["gradcampp_linearity"] = {"layer": cfg.cues.layer, "module": cue_module, **linearity_summary(
        torch.cat(terms) if terms else torch.zeros(0), maximum=terms_max, count=terms_count)}
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
    inner = result.get("attention_overlap_inner") or {}
    for m, v in result.get("attention_overlap", {}).items():
        lines.append(f"{'L_AS ' + m:<14} {v:6.4f} (last)" + (f"  {inner[m]:6.4f} (inner)" if m in inner else ""))
    lin = result.get("gradcampp_linearity") or {}
    if lin.get("median") is not None:
        lines.append(f"{'|g·ΣA|/2':<14} median {lin['median']:.2g}, p99 {lin['p99']:.2g}, max {lin['max']:.2g} "
                     f"(layer {lin['layer']}; Grad-CAM++ ≈ channel-weighted while ≪ 1)")
    return "\n".join(lines)
