"""The ``sharpen`` command: one subcommand per stage, run in order.

    sharpen data build|check|stats  datasets in VOC layout
    sharpen classify ...          stage 1: classifiers, plain or ICASC
    sharpen cues ...              stage 2: attention maps and SEC localization cues
    sharpen segment ...           stage 3: SEC segmenter, CRF, predictions, submissions
    sharpen eval ...              metrics: mIoU, classification
    sharpen run                   all stages in order from one config
    sharpen report                the report and figures of a run folder, redrawn from its JSON files

Each stage also runs as ``python -m <package>`` (``python -m data build --out DIR``).
Bad input (a :class:`~sharpen_core.errors.UserError`) exits with status 2 and one line
``error: <file>: <what was expected>``; any other exception is a bug and shows its traceback (exit 1).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from sharpen_core.errors import DatasetError, UsageError, UserError
from sharpen_core.layout import CUES_SUBDIR, FULL_SUPERVISION, QUALITY_SUBDIR, RunLayout, segmenter_for_cues
from sharpen_core.lock import folder_lock, refuse_file_if_held


STAGES = ("data", "classify", "cues", "segment", "eval", "run", "report")


def _add_config_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=None,
                   help="run configuration (TOML, see configs/); defaults apply where absent")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config key, e.g. --set classify.lr=0.02 (repeatable; value parsed as TOML)")


# Options several subcommands share, declared once: name -> (flags, argparse keywords).
SHARED_OPTIONS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "device": (("--device",), {"default": None, "help": "auto, cpu, cuda or cuda:N (default: run.device)"}),
    "quiet": (("--quiet",), {"action": "store_true", "help": "no progress bars or summary lines"}),
    "resume": (("--resume",), {"action": "store_true",
                               "help": "continue the unfinished run in the output folder (its checkpoint.pt)"}),
}


def _add_shared_options(p: argparse.ArgumentParser, *names: str) -> None:
    for name in names:
        flags, kwargs = SHARED_OPTIONS[name]
        p.add_argument(*flags, **kwargs)


# --------------------------------------------------------------------------- data
def _cmd_data_build(args: argparse.Namespace) -> int:
    with folder_lock(args.out, hint="--out"):
        from data.builtin import build_builtin_dataset

        summary = build_builtin_dataset(args.out, seed=args.seed, size=args.size, workers=args.workers,
                                        progress=not args.quiet)
    if not args.quiet:
        splits = summary.get("splits", summary.get("counts", {}))
        timing = "already complete, reused" if summary.get("reused") else f"{summary.get('seconds', 0.0):.1f} s"
        print(f"built-in dataset at {args.out}: " + ", ".join(f"{k} {v}" for k, v in splits.items())
              + f" ({timing})")
    return 0


def _cmd_data_check(args: argparse.Namespace) -> int:
    from data.check import check_dataset, format_summary
    from sharpen_core.io import write_json_atomic

    if args.json:
        refuse_file_if_held(args.json, hint="--json")
    summary = check_dataset(args.root, splits=args.split or None, progress=not args.quiet)
    print(format_summary(summary))
    if args.json:
        write_json_atomic(args.json, summary)
    return 0


def _cmd_data_stats(args: argparse.Namespace) -> int:
    from sharpen_core.io import write_json_atomic
    from data.stats import dataset_stats, format_stats

    if args.json:
        refuse_file_if_held(args.json, hint="--json")
    stats = dataset_stats(args.root, split=args.split, progress=not args.quiet)
    print(format_stats(stats))
    if args.json:
        write_json_atomic(args.json, stats)
    return 0


def _build_data_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="datasets in VOC layout: build the built-in one, check a folder, statistics",
                       description="Datasets in PASCAL VOC layout (VOC 2012, SBD train_aug, the built-in dataset).")
    dsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    b = dsub.add_parser("build", help="generate the built-in dataset in VOC layout",
                        description="Generate the built-in WSSS dataset (12 VOC classes, bodies with small "
                                    "discriminative parts, class-correlated scenes, occlusion, void borders) in "
                                    "exactly the VOC 2012 layout. Deterministic for a seed; a complete build "
                                    "at --out with the same seed and size is skipped.")
    b.add_argument("--out", type=Path, required=True, help="folder to write (created if missing)")
    b.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    b.add_argument("--size", choices=("small", "medium", "default"), default="default",
                   help="small: a few hundred images for tests; medium (the demo's): default's first 800 train "
                        "images, the same val and test; default: 1600 train, 320 val, 320 test")
    b.add_argument("--workers", type=int, default=None, help="processes (default: up to 2)")
    _add_shared_options(b, "quiet")
    b.set_defaults(func=_cmd_data_build)

    c = dsub.add_parser("check", help="validate a dataset folder and print a summary",
                        description="Read every image and mask of a VOC-layout folder; print images per split, "
                                    "masks, images per class and images with 2+ classes, or exit 2 at the first "
                                    "problem with a message naming the file.")
    c.add_argument("--root", type=Path, required=True, help="VOCdevkit, VOC2012 or built-in dataset folder")
    c.add_argument("--split", action="append", default=[], help="only this split (repeatable; default: all found)")
    c.add_argument("--json", type=Path, default=None, help="also write the summary as JSON here")
    _add_shared_options(c, "quiet")
    c.set_defaults(func=_cmd_data_check)

    st = dsub.add_parser("stats", help="WSSS statistics of a split: objects, classes, foreground, object sizes",
                         description="Objects and classes per image, foreground fraction (of non-void pixels), "
                                     "object area distribution, class frequency and top class co-occurrences of "
                                     "one split of a VOC-layout dataset (real VOC or the built-in one). Objects "
                                     "come from SegmentationObject/ when present, else from connected components "
                                     "of each class (the output says which).")
    st.add_argument("--root", type=Path, required=True, help="VOCdevkit, VOC2012 or built-in dataset folder")
    st.add_argument("--split", default="train", help="split with masks (default train)")
    st.add_argument("--json", type=Path, default=None, help="also write the statistics as JSON here")
    st.add_argument("--quiet", action="store_true", help="no progress bar")
    st.set_defaults(func=_cmd_data_stats)


# --------------------------------------------------------------------------- classify
def _stage_config(args: argparse.Namespace):
    from sharpen_core.config import load_config

    cfg = load_config(args.config, args.overrides)
    if getattr(args, "device", None):
        cfg.run.device = args.device
    if getattr(args, "weights", None):
        cfg.classify.weights = str(args.weights)
    return cfg


def _cmd_classify_train(args: argparse.Namespace) -> int:
    from classify.train import variant_config

    cfg = _stage_config(args)
    variant_config(cfg, args.variant)  # an "<variant>@<label>" needs its overrides table: refused before any folder
    out = args.out or RunLayout(cfg.run.run_dir).classifier(args.variant)
    with folder_lock(out, hint="--out"):  # before the slow imports: a second writer is refused at once
        from classify.pretrain import resolve_builtin
        from classify.train import train_classifier

        cfg, _ = resolve_builtin(cfg, progress=not args.quiet)  # weights = "builtin": docs/method.md §8
        train_classifier(cfg, args.variant, out, resume=args.resume, progress=not args.quiet)
    return 0


def _cmd_classify_pretrain(args: argparse.Namespace) -> int:
    from classify.pretrain import ensure_pretrained, pretrained_folder

    cfg = _stage_config(args)
    record = ensure_pretrained(cfg, progress=not args.quiet)
    print(f"pretrained start {record['key']} ({'cache hit' if record['cache_hit'] else 'made now'}): "
          f"{pretrained_folder(record['key'])}; val mAP {record.get('val_map')}; "
          f"data {record.get('data_seconds', 0):.0f} s, training {record.get('train_seconds', 0):.0f} s")
    return 0


def _cmd_classify_evaluate(args: argparse.Namespace) -> int:
    from classify.evaluate import evaluate_classifier, format_evaluation

    cfg = _stage_config(args)
    out_json = args.json or Path(args.checkpoint).parent / f"evaluation_{args.split or cfg.data.val_split}.json"
    refuse_file_if_held(out_json, hint="--json")
    result = evaluate_classifier(cfg, args.checkpoint, split=args.split, mechanisms=args.mechanism or
                                 ("gradcam", "channel"), out_json=out_json, progress=not args.quiet)
    print(format_evaluation(result))
    return 0


def _build_classify_parser(sub: argparse._SubParsersAction) -> None:
    from classify.train import VARIANTS, check_variant

    def variant_arg(name: str) -> str:
        try:
            check_variant(name)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e) if name.split("@")[0] in VARIANTS else
                                             f"invalid choice: {name!r} (choose from {', '.join(VARIANTS)}, or an "
                                             "ICASC one + '@<label>')") from None
        return name

    p = sub.add_parser("classify", help="stage 1: train and evaluate VGG-19 / ResNet classifiers, baseline or ICASC",
                       description="Stage 1: multi-label (VOC layout) or single-label classifiers, trained plain "
                                   "or with ICASC (attention separation on the inner and last layers plus "
                                   "attention consistency, docs/method.md §2).")
    csub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    t = csub.add_parser("train", help="train one variant",
                        description="Train one classifier variant: baseline (classification loss only), "
                                    "icasc-gradcam (ICASC losses on Grad-CAM maps) or icasc (on channel-weighted "
                                    "maps). Writes checkpoint.pt (atomically, every epoch), metrics.json and "
                                    "config.toml. Under torchrun it trains with DistributedDataParallel.")
    _add_config_options(t)
    t.add_argument("--variant", required=True, metavar="VARIANT", type=variant_arg,
                   help=f"which variant to train: {', '.join(VARIANTS)}, or an ICASC one + '@<label>' with its "
                        "classify.variant_overrides table (docs/method.md §2.6)")
    t.add_argument("--out", type=Path, default=None, help="output folder (default RUN_DIR/classify/VARIANT)")
    t.add_argument("--weights", type=Path, default=None,
                   help="initial weights: a local state dict (e.g. ImageNet weights for offline use)")
    _add_shared_options(t, "resume", "device", "quiet")
    t.set_defaults(func=_cmd_classify_train)
    pt = csub.add_parser("pretrain", help="make (or find) the built-in pretrained start of [pretrain]",
                         description="The built-in \"ImageNet\" (docs/method.md §8): a plain classifier trained "
                                     "once on a separate, larger built-in set, kept in the per-machine cache "
                                     "($SHARPEN_CACHE, default ~/.cache/sharpen-focus) under a key of its "
                                     "settings; classify.weights / segment.weights = \"builtin\" start from it.")
    _add_config_options(pt)
    _add_shared_options(pt, "device", "quiet")
    pt.set_defaults(func=_cmd_classify_pretrain)
    e = csub.add_parser("evaluate", help="per-class AP, mAP, AUC, KS and attention overlap of a checkpoint",
                        description="Evaluate a checkpoint: per-class AP and mAP, macro ROC AUC (multi-label), "
                                    "top-1/top-5 (single-label), the KS distance of target vs most-confusing "
                                    "class probabilities, and the mean attention overlap L_AS per mechanism.")
    _add_config_options(e)
    e.add_argument("--checkpoint", type=Path, required=True, help="checkpoint.pt from classify train")
    e.add_argument("--split", default=None, help="split to evaluate (default: data.val_split)")
    e.add_argument("--mechanism", action="append", default=[],
                   help="mechanism(s) for the attention overlap (default gradcam and channel)")
    e.add_argument("--json", type=Path, default=None, help="where to write the JSON (default beside the checkpoint)")
    _add_shared_options(e, "device", "quiet")
    e.set_defaults(func=_cmd_classify_evaluate)


# --------------------------------------------------------------------------- cues
def _cmd_cues_extract(args: argparse.Namespace) -> int:
    from cues.extract import extract_maps, parse_shard
    from sharpen_attention.mechanisms import check_mechanism

    check_mechanism(args.mechanism)
    cfg = _stage_config(args)
    split = args.split or cfg.data.train_split
    out = args.out or RunLayout(cfg.run.run_dir).maps(Path(args.checkpoint).resolve().parent.name, args.mechanism,
                                                       split)
    shard = parse_shard(args.shard)
    with folder_lock(out, hint="--out (or another --shard)", shard=shard):
        extract_maps(cfg, args.checkpoint, args.mechanism, out, split=split, shard=shard, progress=not args.quiet)
    return 0


def _cmd_cues_sec(args: argparse.Namespace) -> int:
    from cues.sec import write_sec_cues

    cfg = _stage_config(args)
    out = args.out or Path(args.maps) / CUES_SUBDIR
    with folder_lock(out, hint="--out"):
        record = write_sec_cues(args.maps, cfg.cues, out, progress=not args.quiet)
    if not args.quiet:
        print(f"[cues sec] {record['written']} cue files written, {record['skipped']} already there "
              f"(grid {record['params']['grid']}) -> {out}")
    return 0


def _cmd_cues_evaluate(args: argparse.Namespace) -> int:
    from cues.quality import comparison_table, evaluate_cues, evaluate_floors, format_quality

    if args.out is not None and len(args.maps) > 1:
        raise UsageError("--out needs a single --maps (each folder's results go to MAPS/quality by default)")
    cfg = _stage_config(args)
    if args.json:
        refuse_file_if_held(args.json, hint="--json")
    results = []
    floors = []
    with contextlib.ExitStack() as locks:
        for maps in args.maps:  # each folder's results: one writer each, taken before any work
            if not Path(maps).is_dir():
                raise DatasetError(maps, "not found; expected a folder written by `sharpen cues extract`")
            locks.enter_context(folder_lock(args.out or Path(maps) / QUALITY_SUBDIR, hint="--out"))
        for maps in args.maps:
            result = evaluate_cues(cfg, maps, split=args.split, out_dir=args.out, progress=not args.quiet)
            print(format_quality(result))
            print()
            results.append(result)
        if args.floors:  # on the split the first --maps was scored on, next to its quality.json
            out = (args.out or Path(args.maps[0]) / QUALITY_SUBDIR) / "floors"
            floors = evaluate_floors(cfg, results[0]["split"], out_dir=out, progress=not args.quiet)
    print(comparison_table(results, floors))
    if args.json:
        from sharpen_core.io import write_json_atomic

        write_json_atomic(args.json, [{k: v for k, v in r.items() if k != "config"} for r in results + floors])
    return 0


def _cmd_cues_show(args: argparse.Namespace) -> int:
    from cues.show import show_maps

    cfg = _stage_config(args)
    refuse_file_if_held(args.out, hint="--out")
    info = show_maps(cfg, args.out, maps_dirs=args.maps, checkpoint=args.checkpoint, mechanisms=args.mechanism,
                     split=args.split, ids=args.ids or None, count=args.count, tile=args.tile)
    if not args.quiet:
        print(f"[cues show] {info['rows']} rows x {', '.join(info['columns'])} -> {info['out']}")
    return 0


def _build_cues_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cues", help="stage 2: attention maps (Grad-CAM, Grad-CAM++, channel-weighted), SEC cues, "
                                    "cue quality",
                       description="Stage 2: class attention maps of a trained classifier, SEC localization cues "
                                   "from them, and how good they are as cues (docs/method.md §1, §4 and §6).")
    csub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    x = csub.add_parser("extract", help="multi-scale + flip attention maps for every image of a split",
                        description="For every image, the attention maps of its ground-truth classes (cues.classes) "
                                    "from one layer (cues.layer), averaged over cues.scales and horizontal flip "
                                    "(cues.flip), at image resolution, one compressed OUT/maps/<id>.npz per image "
                                    "(cues.storage float16 or uint8), written atomically. A rerun skips finished "
                                    "images; a folder made with other parameters is refused.")
    _add_config_options(x)
    x.add_argument("--checkpoint", type=Path, required=True, help="checkpoint.pt from classify train")
    x.add_argument("--mechanism", required=True,
                   help="gradcam, gradcampp, channel, or a pytorch-grad-cam name (scorecam, layercam, ...)")
    x.add_argument("--split", default=None,
                   help="split to extract (train_aug, train, val, ...; default data.train_split)")
    x.add_argument("--out", type=Path, default=None,
                   help="output folder (default RUN_DIR/cues/<checkpoint folder>/<mechanism>/<split>)")
    x.add_argument("--shard", default=None, metavar="I/N",
                   help="take images I, I+N, I+2N, ... (a job array: run I = 0..N-1 into the same --out)")
    _add_shared_options(x, "device", "quiet")
    x.set_defaults(func=_cmd_cues_extract)
    s = csub.add_parser("sec", help="SEC localization cues from extracted maps",
                        description="Multi-hot SEC cues per image on the cues.grid grid (0: image size): class c "
                                    "where its map exceeds cues.fg_threshold of its maximum, background on the "
                                    "cues.bg_fraction lowest-attention pixels (or lowest saliency, cues.bg_rule). "
                                    "Writes <id>.npz and sec.json with the parameters.")
    _add_config_options(s)
    s.add_argument("--maps", type=Path, required=True, help="a folder written by cues extract")
    s.add_argument("--out", type=Path, default=None, help="output folder (default MAPS/sec)")
    _add_shared_options(s, "quiet")
    s.set_defaults(func=_cmd_cues_sec)
    e = csub.add_parser("evaluate", help="pseudo-label mIoU over the background threshold, seed precision/recall",
                        description="On a split with ground truth: the pseudo-label mIoU swept over the background "
                                    "threshold tau (eval.tau_min..eval.tau_max by eval.tau_step; curve as CSV and "
                                    "PNG), the best tau, and per-class precision and recall of the SEC seeds. "
                                    "Writes MAPS/quality/quality.json; with several --maps, a side-by-side table.")
    _add_config_options(e)
    e.add_argument("--maps", type=Path, action="append", required=True,
                   help="a folder written by cues extract (repeatable, for a side-by-side table)")
    e.add_argument("--split", default=None, help="split with ground truth (default: the split the maps are of)")
    e.add_argument("--out", type=Path, default=None, help="output folder for one --maps (default MAPS/quality)")
    e.add_argument("--json", type=Path, default=None, help="also write all results (without configs) here")
    e.add_argument("--floors", action="store_true",
                   help="also score the floors, maps that do not localize (floor-uniform: the image's labels over "
                        "the whole image; floor-centre: a centred Gaussian), by the same tau sweep; written to "
                        "MAPS/quality/floors/<floor>/ (or OUT/floors/), added to the table (with each mechanism's "
                        "gain over the best floor) and to --json")
    _add_shared_options(e, "quiet")
    e.set_defaults(func=_cmd_cues_evaluate)
    v = csub.add_parser("show", help="PNG grid: image, ground truth and each mechanism's maps",
                        description="One row per (image, ground-truth class): the image, its ground truth and the "
                                    "class's map per mechanism blended over the image. Maps from extraction folders "
                                    "(--maps) and/or computed from --checkpoint for each --mechanism.")
    _add_config_options(v)
    v.add_argument("--out", type=Path, required=True, help="PNG file to write")
    v.add_argument("--maps", type=Path, action="append", default=[],
                   help="a folder written by cues extract (repeatable)")
    v.add_argument("--checkpoint", type=Path, default=None, help="checkpoint.pt, to compute maps for --mechanism")
    v.add_argument("--mechanism", action="append", default=[], help="mechanism to compute (repeatable)")
    v.add_argument("--split", default=None, help="split (default: that of the first --maps, else data.train_split)")
    v.add_argument("--ids", nargs="+", default=[], help="image ids to show (default: the first --count)")
    v.add_argument("--count", type=int, default=4, help="how many images (default 4)")
    v.add_argument("--tile", type=int, default=128, help="tile size in pixels (default 128)")
    _add_shared_options(v, "device", "quiet")
    v.set_defaults(func=_cmd_cues_show)


# --------------------------------------------------------------------------- eval
def _cmd_eval_segmentation(args: argparse.Namespace) -> int:
    from eval.predictions import evaluate_predictions, ground_truth, is_submission

    if args.json:
        refuse_file_if_held(args.json, hint="--json")
    gt = ground_truth(args.root, args.split)
    submission = is_submission(args.pred)
    scores = evaluate_predictions(args.pred, args.root, args.split, progress=not args.quiet)
    print(f"{'submission' if submission else 'predictions'} {args.pred} on {args.split} "
          f"({len(gt.ids)} images, ground truth {gt.source})")
    print(scores.table())
    if args.json:
        from sharpen_core.io import write_json_atomic

        write_json_atomic(args.json, {"pred": str(args.pred), "root": str(args.root), "split": args.split,
                                      "submission": submission, "ground_truth": gt.source, **scores.to_dict()})
    return 0


def _build_eval_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="metrics: segmentation mIoU (classification: stage 1)",
                       description="Metrics. Segmentation: one 21x21 confusion matrix over the split, "
                                   "ground truth 255 ignored, per-class IoU and mIoU over classes present.")
    esub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    s = esub.add_parser("segmentation", help="mIoU of predicted label PNGs (a folder or a VOC submission)",
                        description="Score predicted masks against a split's ground truth; print the per-class "
                                    "IoU table. --pred is a folder of <id>.png (palette or grey, values 0-20), or "
                                    "a VOC test-server submission: the .tar.gz of "
                                    "results/VOC2012/Segmentation/comp6_test_cls/<id>.png or a folder holding "
                                    "results/, checked as the server would (exactly the split's images, image "
                                    "size, values 0-20, no 255). The built-in dataset's test split is scored "
                                    "against its held-back masks (SegmentationClassTest/); VOC's test split has "
                                    "no masks here (submit the tarball to the evaluation server).")
    s.add_argument("--pred", type=Path, required=True, metavar="DIR|TARBALL",
                   help="folder of predicted <id>.png masks, or a submission .tar.gz / folder")
    s.add_argument("--root", "--gt", dest="root", type=Path, required=True, help="dataset folder (VOC layout)")
    s.add_argument("--split", default="val", help="split whose ground truth to use (default val)")
    s.add_argument("--json", type=Path, default=None, help="also write the scores as JSON here")
    _add_shared_options(s, "quiet")
    s.set_defaults(func=_cmd_eval_segmentation)


# --------------------------------------------------------------------------- segment
def _cmd_segment_train(args: argparse.Namespace) -> int:
    cfg = _stage_config(args)
    supervision = args.supervision or cfg.segment.supervision
    if supervision == "sec" and args.cues is None:
        raise UsageError("`segment train` with supervision 'sec' needs --cues DIR (a folder written by "
                         "`sharpen cues sec`); or use --supervision full")
    name = FULL_SUPERVISION if supervision == "full" else segmenter_for_cues(args.cues, cfg.data.train_split)
    out = args.out or RunLayout(cfg.run.run_dir).segmenter(name)
    with folder_lock(out, hint="--out"):
        from classify.pretrain import resolve_builtin
        from segment.train import train_segmenter

        cfg, _ = resolve_builtin(cfg, progress=not args.quiet)  # weights = "builtin": docs/method.md §8
        train_segmenter(cfg, out, cues_dir=args.cues, supervision=supervision, resume=args.resume,
                        progress=not args.quiet)
    return 0


def _cmd_segment_predict(args: argparse.Namespace) -> int:
    cfg = _stage_config(args)
    split = args.split or cfg.data.val_split
    out = args.out or RunLayout(cfg.run.run_dir).prediction(Path(args.checkpoint).resolve().parent.name, split)
    crf = args.crf or cfg.segment.predict_crf
    with folder_lock(out, hint="--out"):
        from segment.predict import predict_split

        predict_split(cfg, args.checkpoint, split, out, crf=crf, submission=args.submission,
                      progress=not args.quiet)
    return 0


def _build_segment_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="stage 3: SEC training of a DeepLab segmenter, dense-CRF refinement, "
                                       "predictions, VOC submissions",
                       description="Stage 3: train a DeepLab-LargeFOV or DeepLabV3+ segmenter from SEC cues "
                                   "(seeding, expansion, constrain-to-boundary) or from full masks, predict "
                                   "with multi-scale + flip and dense-CRF refinement, write VOC submissions.")
    ssub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    t = ssub.add_parser("train", help="train a segmenter from SEC cues (or ground-truth masks)",
                        description="Train per [segment]; atomic checkpoints every segment.checkpoint_every "
                                    "iterations, --resume continues; metrics JSON; DDP through torchrun.")
    _add_config_options(t)
    t.add_argument("--cues", type=Path, default=None, help="SEC cue folder (from `sharpen cues sec`)")
    t.add_argument("--supervision", choices=("sec", "full"), default=None,
                   help="sec: from cues (default segment.supervision); full: ground-truth masks (upper bound)")
    t.add_argument("--out", type=Path, default=None,
                   help="output folder (default RUN_DIR/segment/<variant>-<mechanism> for a cue folder "
                        "RUN_DIR/cues/<variant>/<mechanism>/<split>/sec, as `sharpen run`; else the cue folder's name)")
    _add_shared_options(t, "resume", "device", "quiet")
    t.set_defaults(func=_cmd_segment_train)
    r = ssub.add_parser("predict", help="predict a split: multi-scale + flip, dense CRF, palette PNGs",
                        description="Predict every image of a split at full resolution; write OUT/pred (no CRF) "
                                    "and/or OUT/pred_crf (dense CRF); --submission also writes the VOC "
                                    "test-server layout and its .tar.gz.")
    _add_config_options(r)
    r.add_argument("--checkpoint", type=Path, required=True, help="checkpoint.pt of `segment train`")
    r.add_argument("--split", default=None, help="split to predict (default data.val_split)")
    r.add_argument("--out", type=Path, default=None,
                   help="output folder (default RUN_DIR/predict/<checkpoint folder>/<split>, as `sharpen run`)")
    r.add_argument("--crf", choices=("on", "off", "both"), default=None, help="default segment.predict_crf")
    r.add_argument("--submission", action="store_true",
                   help="also write results/VOC2012/Segmentation/comp6_test_cls/<id>.png and a .tar.gz")
    _add_shared_options(r, "device", "quiet")
    r.set_defaults(func=_cmd_segment_predict)


# --------------------------------------------------------------------------- run
def _cmd_run(args: argparse.Namespace) -> int:
    from .run import run_pipeline

    cfg = _stage_config(args)
    if args.run_dir is not None:
        cfg.run.run_dir = str(args.run_dir)
    run_pipeline(cfg, progress=not args.quiet, from_stage=args.from_stage, only=args.only, seeds=args.seeds)
    return 0


def _build_run_parser(sub: argparse._SubParsersAction) -> None:
    from .plan import STAGES as RUN_STAGES

    p = sub.add_parser("run", help="run every stage in order from one config, and write the report",
                       description="Run the pipeline from one config: dataset, classifiers (baseline, "
                                   "icasc-gradcam, icasc), cues of each run.cue_sets entry, one segmenter per "
                                   "cue set (or per run.segment_cue_sets entry) plus the fully-supervised "
                                   "reference, val predictions with and "
                                   "without CRF, a test submission, and report.md/report.json/figures. A rerun "
                                   "skips finished stages and resumes an interrupted one. Stages: "
                                   + ", ".join(RUN_STAGES) + ".")
    _add_config_options(p)
    p.add_argument("--run-dir", type=Path, default=None, help="output folder (default: run.run_dir of the config)")
    p.add_argument("--from", dest="from_stage", metavar="STAGE", default=None,
                   help="redo STAGE and every later stage (their outputs are deleted first)")
    p.add_argument("--only", metavar="STAGE", default=None, help="run only STAGE (the earlier ones must be done)")
    p.add_argument("--seeds", type=int, default=1,
                   help="repeat the run with N seeds (run.seed, run.seed+1, ...) and report mean +- std")
    _add_shared_options(p, "device", "quiet")
    p.set_defaults(func=_cmd_run)


# --------------------------------------------------------------------------- report
def _cmd_report(args: argparse.Namespace) -> int:
    from .report import report_run

    if not args.run_dir.is_dir():
        raise DatasetError(args.run_dir, "run folder not found")
    with folder_lock(args.run_dir, hint="--run-dir"):  # it rewrites report.md, report.json and figures/
        report = report_run(args.run_dir)
    drawn = [p for p in report["figures"].values() if p]
    print(f"report: {args.run_dir / 'report.md'}, {args.run_dir / 'report.json'}")
    print(f"figures ({len(drawn)}, each as .png and .pdf, with its data as .csv except the attention maps): "
          + ", ".join(drawn))
    return 0


def _build_report_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="redraw report.md/report.json and the figures of a run folder",
                       description="Redraw report.md, report.json and figures/ (PNG, PDF and CSV) of a run "
                                   "folder from the JSON files its stages wrote, without rerunning any stage: "
                                   "after a change of style, or for a run copied from another machine. A "
                                   "--seeds N root folder gets the report over its seeds and each seed its own.")
    p.add_argument("--run-dir", type=Path, required=True, help="the run folder (run.run_dir of `sharpen run`)")
    p.set_defaults(func=_cmd_report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sharpen",
        description="sharpen-focus: weakly-supervised semantic segmentation with ICASC attention, "
                    "and a comparison of attention mechanisms as localization cues.",
    )
    sub = parser.add_subparsers(dest="stage", metavar="STAGE", required=True)
    _build_data_parser(sub)
    _build_classify_parser(sub)
    _build_cues_parser(sub)
    _build_segment_parser(sub)
    _build_eval_parser(sub)
    _build_run_parser(sub)
    _build_report_parser(sub)
    return parser


# OpenMP threads that find no work spin this many times before they sleep (GNU OpenMP, which torch uses on
# Linux; its default spins far longer). Measured on the 2-core machine, ResNet-18 training steps at 64 px,
# batch 32, 2 threads: quiet 147 img/s (default) vs 134 (1000); with another process busy on one core 28 vs 78.
# A user's own GOMP_SPINCOUNT or OMP_WAIT_POLICY is kept.
GOMP_SPINCOUNT_DEFAULT = "1000"


def _calm_openmp() -> None:
    """Shorter OpenMP spin-waiting, set before torch is first imported (it has no effect after)."""
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", GOMP_SPINCOUNT_DEFAULT)


def main(argv: Sequence[str] | None = None) -> int:
    _calm_openmp()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as e:  # the user's to fix: one line, exit 2; anything else is a bug (traceback, exit 1)
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        print(f"error: the disk is full ({e}); every file is written atomically, so nothing finished is lost: "
              "free some space and rerun the same command to resume", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def stage_main(stage: str) -> None:
    """Entry point of ``python -m <stage>``."""
    sys.exit(main([stage, *sys.argv[1:]]))


if __name__ == "__main__":
    sys.exit(main())
