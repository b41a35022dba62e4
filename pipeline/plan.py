"""The plan of ``sharpen run``: its stages, the cue sets, which of them get a segmenter, and the config
hash each stage's outputs depend on. Pure reading of the config: nothing here runs or reads a run folder.
"""

from __future__ import annotations

from pathlib import Path

from sharpen_core.config import Config, ConfigError
from sharpen_core.layout import FULL_SUPERVISION, RunLayout, segmenter_name
from sharpen_core.pretrained import BUILTIN
from sharpen_core.records import config_part, fingerprint

STAGES = ("data", "classify", "cues", "segment", "predict", "report")


def stage_hash(cfg: Config, stage: str) -> str:
    """Hash of everything ``stage``'s outputs depend on: its config part and every earlier stage's, and
    the built-in generator's version when the run builds its data (a folder of another version is rebuilt)."""
    part = config_part(cfg, [f"run.{name}" for name in STAGES[: STAGES.index(stage) + 1]])
    if cfg.data.builtin:
        from data.builtin import GENERATOR_VERSION

        part["data.builtin_generator_version"] = GENERATOR_VERSION
    if STAGES.index(stage) >= STAGES.index("classify") and BUILTIN in (cfg.classify.weights, cfg.segment.weights):
        from classify.pretrain import pretrain_key

        part["pretrain.key"] = pretrain_key(cfg)  # what made the pretrained start (docs/method.md §8)
    return fingerprint(part)


def check_run_config(cfg: Config) -> None:
    """Stage names, cue sets and mechanisms the config names must exist; list the valid ones."""
    from classify.train import VARIANTS, check_variant, variant_config
    from sharpen_attention.mechanisms import check_mechanism

    for stage in cfg.run.stages:
        if stage not in STAGES:
            raise ConfigError(f"{cfg.source}: run.stages names an unknown stage {stage!r}; "
                              f"valid stages: {', '.join(STAGES)}")
    for entry in cfg.run.cue_sets:
        if entry.count(":") != 1:
            raise ConfigError(f"{cfg.source}: run.cue_sets entry {entry!r}: expected '<classifier variant>:"
                              f"<mechanism>', e.g. 'baseline:gradcam'")
        variant, mechanism = entry.split(":")
        try:
            check_variant(variant)
        except ConfigError:
            raise ConfigError(f"{cfg.source}: run.cue_sets entry {entry!r}: unknown classifier variant "
                              f"{variant!r}; valid variants: {', '.join(VARIANTS)}, or an ICASC one + '@<label>'") from None
        if variant not in cfg.classify.variants:
            raise ConfigError(f"{cfg.source}: run.cue_sets entry {entry!r} needs the {variant!r} classifier, "
                              f"but classify.variants = {cfg.classify.variants}")
        try:
            check_mechanism(mechanism)
        except ValueError as e:
            raise ConfigError(f"{cfg.source}: run.cue_sets entry {entry!r}: {e}") from None
    segmented = cfg.run.segment_cue_sets
    if segmented != ["all"]:
        for entry in segmented:
            if entry not in cfg.run.cue_sets:
                raise ConfigError(f"{cfg.source}: run.segment_cue_sets entry {entry!r} is not one of run.cue_sets "
                                  f"({', '.join(cfg.run.cue_sets)}); list cue sets from there, or [\"all\"]")
    for variant in cfg.classify.variants:
        variant_config(cfg, variant)  # a known variant, and an overrides table for "<variant>@<label>"
    _check_cue_layer(cfg)


def _check_cue_layer(cfg: Config) -> None:
    """``cues.layer`` ("last", "inner" or a module name) must exist in ``classify.arch`` (built on the meta device)."""
    import torch

    from sharpen_attention.classifiers import ARCHS, build_classifier
    from sharpen_attention.attention import resolve_layers

    if cfg.classify.arch not in ARCHS:
        return  # the classify stage names the unknown architecture
    with torch.device("meta"):
        model = build_classifier(cfg.classify.arch, 20)
    try:
        resolve_layers(model, cfg.cues.layer)
    except ValueError as e:
        raise ConfigError(f"{cfg.source}: cues.layer: {str(e).split(' Available:')[0]}") from None


def check_run_args(cfg: Config, from_stage: str | None, only: str | None) -> None:
    """``--from``/``--only`` must name a stage, and the config must pass :func:`check_run_config`."""
    for name, value in (("--from", from_stage), ("--only", only)):
        if value is not None and value not in STAGES:
            raise ConfigError(f"{name} {value!r}: unknown stage; valid stages: {', '.join(STAGES)}")
    check_run_config(cfg)


def cue_sets(cfg: Config) -> list[tuple[str, str]]:
    """``run.cue_sets`` as (classifier variant, mechanism) pairs."""
    return [tuple(entry.split(":")) for entry in cfg.run.cue_sets]  # type: ignore[misc]


def segmented_cue_sets(cfg: Config) -> list[tuple[str, str]]:
    """The cue sets of ``run.segment_cue_sets`` (every cue set for ``["all"]``), in ``run.cue_sets`` order."""
    chosen = cfg.run.segment_cue_sets
    return [(v, m) for v, m in cue_sets(cfg) if chosen == ["all"] or f"{v}:{m}" in chosen]


def cue_split(cfg: Config) -> str:
    """The split the cues are scored on (``eval.cue_split``, default the training split)."""
    return cfg.eval.cue_split or cfg.data.train_split


def segmenters(cfg: Config, layout: RunLayout) -> list[tuple[str, Path | None, str]]:
    """(name, cue folder or None, supervision) of every segmenter the run trains."""
    out: list[tuple[str, Path | None, str]] = [
        (segmenter_name(v, m), layout.cues(v, m, cfg.data.train_split), "sec") for v, m in segmented_cue_sets(cfg)]
    if cfg.run.full_supervision:
        out.append((FULL_SUPERVISION, None, "full"))
    return out
