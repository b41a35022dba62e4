"""ICASC's loss options in the config (docs/method.md §2.4-2.6): the checks refuse bad values naming the key,
per-variant settings ("<variant>@<label>") resolve as documented, and a ramped run records its factors and
resumes bit-exactly."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import torch

from classify.train import load_checkpoint, train_classifier, variant_config
from sharpen_core.config import ConfigError, config_from_dict, dump_toml, load_config
from sharpen_core.records import config_part, fingerprint

REPO = Path(__file__).resolve().parent.parent


def test_defaults_are_the_papers():
    c = load_config().classify
    assert (c.weight_as_inner, c.weight_as_last, c.weight_ac) == (1.0, 1.0, 1.0)
    assert (c.ac_hinge, c.attention_rampup_steps, c.variant_overrides) == (False, 0, {})


@pytest.mark.parametrize("key, value, expected", [
    ("weight_as_inner", -0.1, "classify.weight_as_inner: expected a value >= 0, got -0.1"),
    ("weight_as_last", -1, "classify.weight_as_last: expected a value >= 0, got -1.0"),
    ("weight_ac", -2.5, "classify.weight_ac: expected a value >= 0, got -2.5"),
    ("attention_rampup_steps", 10.5, "classify.attention_rampup_steps: expected an integer, got 10.5"),
    ("attention_rampup_steps", -1, "classify.attention_rampup_steps: expected a value >= 0, got -1"),
    ("ac_hinge", 1, "classify.ac_hinge: expected true or false, got 1"),
])
def test_bad_values_are_refused_naming_the_key(tmp_path, key, value, expected):
    path = tmp_path / "c.toml"
    path.write_text(f"[classify]\n{key} = {json.dumps(value)}\n")
    with pytest.raises(ConfigError, match=f"^{path}: {expected}$".replace(".", r"\.").replace("(", r"\(")):
        load_config(path)
    with pytest.raises(ConfigError, match=key):
        load_config(None, [f"classify.{key}={json.dumps(value)}"])


def test_zero_weights_and_a_ramp_are_accepted():
    c = load_config(None, ["classify.weight_ac=0", "classify.attention_rampup_steps=200", "classify.ac_hinge=true"])
    assert (c.classify.weight_ac, c.classify.attention_rampup_steps, c.classify.ac_hinge) == (0.0, 200, True)


OVERRIDES = """
[classify]
variants = ["baseline", "icasc", "icasc@val"]
weight_ac = 1.0

[classify.variant_overrides."icasc@val"]
weight_as_inner = 0.1
weight_ac = 0
ac_hinge = true
attention_rampup_steps = 20
"""


def test_variant_overrides_resolve_and_round_trip(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(OVERRIDES)
    cfg = load_config(path)
    assert cfg.classify.variant_overrides == {"icasc@val": {"weight_as_inner": 0.1, "weight_ac": 0.0,
                                                            "ac_hinge": True, "attention_rampup_steps": 20}}
    val = variant_config(cfg, "icasc@val").classify
    assert (val.weight_as_inner, val.weight_as_last, val.weight_ac, val.ac_hinge, val.attention_rampup_steps) == \
        (0.1, 1.0, 0.0, True, 20)
    assert val.variant_overrides == {}
    paper = variant_config(cfg, "icasc").classify
    assert (paper.weight_as_inner, paper.weight_ac, paper.ac_hinge, paper.attention_rampup_steps) == (1.0, 1.0, False, 0)
    assert variant_config(cfg, "icasc").source == str(path)
    # the baseline's (and the paper setting's) checkpoint hash does not depend on another variant's table
    plain = load_config(path, ['classify.variant_overrides={"icasc@val" = {weight_ac = 0.5}}'])
    for v in ("baseline", "icasc"):
        assert fingerprint(config_part(variant_config(cfg, v), "classifier")) == \
            fingerprint(config_part(variant_config(plain, v), "classifier"))
    assert fingerprint(config_part(variant_config(cfg, "icasc@val"), "classifier")) != \
        fingerprint(config_part(variant_config(plain, "icasc@val"), "classifier"))
    # written as TOML and read back unchanged (the config.toml a stage saves)
    assert config_from_dict(tomllib.loads(dump_toml(cfg))).classify == cfg.classify


@pytest.mark.parametrize("table, expected", [
    ('[classify.variant_overrides."icasc@val"]\nlr = 0.1', r'classify\.variant_overrides\.icasc@val\.lr: not settable '
                                                           r'per variant; settable keys: sigma, omega, theta'),
    ('[classify.variant_overrides."icasc@val"]\nweight_ac = -1', r'classify\.variant_overrides\.icasc@val\.weight_ac: '
                                                                 r'expected a value >= 0, got -1\.0'),
    ('[classify.variant_overrides."icasc@val"]\nattention_rampup_steps = 0.5',
     r'classify\.variant_overrides\.icasc@val\.attention_rampup_steps: expected an integer'),
    ('[classify.variant_overrides.icasc]\nweight_ac = 0.5', r"named '<variant>@<label>'.*got 'icasc'"),
    ('[classify.variant_overrides."icasc@a/b"]\nweight_ac = 0.5', r"got 'icasc@a/b'"),
    ('[classify]\nvariant_overrides = 3', r"classify\.variant_overrides: expected a table, got 3"),
])
def test_bad_variant_overrides_are_refused(tmp_path, table, expected):
    path = tmp_path / "c.toml"
    path.write_text(table + "\n")
    with pytest.raises(ConfigError, match=expected):
        load_config(path)


def test_bad_variant_names_are_refused():
    cfg = load_config(None, ['classify.variant_overrides={"icasc@val" = {weight_ac = 0.5}, '
                             '"baseline@x" = {weight_ac = 0.5}}'])
    with pytest.raises(ConfigError, match=r"variant 'icasc@other' needs a \[classify\.variant_overrides\.\"icasc@other\"\] "
                                          r"table .*; tables given: icasc@val, baseline@x"):
        variant_config(cfg, "icasc@other")
    with pytest.raises(ConfigError, match="'baseline' has no ICASC losses to set per variant"):
        variant_config(cfg, "baseline@x")
    with pytest.raises(ConfigError, match="unknown variant 'icsac@val'; expected one of: baseline, icasc-gradcam, icasc"):
        variant_config(cfg, "icsac@val")


def test_run_config_check_names_the_bad_variant(tmp_path):
    from pipeline.plan import check_run_config

    cfg = load_config(REPO / "configs" / "quick.toml", ['classify.variants=["baseline", "icasc", "icasc@val"]',
                                                        'run.cue_sets=["icasc@val:channel"]'])
    with pytest.raises(ConfigError, match=r"configs/quick\.toml.*variant 'icasc@val' needs"):
        check_run_config(cfg)
    with pytest.raises(ConfigError, match=r"run\.cue_sets entry 'basline:gradcam': unknown classifier variant"):
        check_run_config(load_config(REPO / "configs" / "quick.toml", ['run.cue_sets=["basline:gradcam"]']))
    check_run_config(load_config(REPO / "configs" / "quick.toml", [
        'classify.variants=["baseline", "icasc", "icasc@val"]', 'run.cue_sets=["icasc@val:channel"]',
        'classify.variant_overrides={"icasc@val" = {weight_ac = 0.5}}']))


# --------------------------------------------------------------------------- training with the options
@pytest.fixture(scope="module")
def small_root(builtin_small) -> Path:
    return builtin_small[0]


def _cfg(root: Path, *extra: str):
    return load_config(REPO / "configs" / "quick.toml", [
        f"data.root={root}", "run.device=cpu", "data.num_workers=0", "classify.image_size=32",
        "classify.batch_size=4", "classify.lr=0.05", "classify.epochs=2", *extra])


def test_ramped_hinged_variant_records_its_factors_and_resumes_exactly(small_root, tmp_path):
    # 2 epochs of 2 steps, N = 4: r = 0, 1/4 | 1/2, 3/4 -> epoch means 1/8 and 5/8
    cfg = _cfg(small_root, 'classify.variant_overrides={"icasc@ramp" = {attention_rampup_steps = 4, ac_hinge = true}}')
    train_classifier(cfg, "icasc@ramp", tmp_path / "full", progress=False, max_batches=2)
    history = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert [h["attention_ramp"] for h in history] == [0.125, 0.625]
    assert all(0.0 <= h["train_ac"] <= cfg.classify.theta for h in history)  # hinged: never below 0
    state = load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    assert state["variant"] == "icasc@ramp"
    saved = tomllib.loads((tmp_path / "full" / "config.toml").read_text())["classify"]
    assert (saved["attention_rampup_steps"], saved["ac_hinge"], saved["variant_overrides"]) == (4, True, {})
    # stopped in the middle of epoch 2 and resumed: the ramp depends on the global step only
    out = train_classifier(cfg, "icasc@ramp", tmp_path / "cut", progress=False, max_batches=2, stop_after_batches=3)
    assert out["interrupted"]
    train_classifier(cfg, "icasc@ramp", tmp_path / "cut", resume=True, progress=False, max_batches=2)
    full, cut = state["model"], load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["model"]
    for k in full:
        assert torch.equal(full[k], cut[k]), k
    def timeless(records):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in records]

    assert timeless(json.loads((tmp_path / "cut" / "metrics.json").read_text())) == timeless(history)


def test_default_run_records_no_ramp_and_matches_the_paper_setting_variant(small_root, tmp_path):
    # "icasc@paper" with an empty table trains exactly as "icasc": same weights, no attention_ramp key
    cfg = _cfg(small_root, "classify.epochs=1", 'classify.variant_overrides={"icasc@paper" = {}}')
    train_classifier(cfg, "icasc", tmp_path / "a", progress=False, max_batches=2)
    train_classifier(cfg, "icasc@paper", tmp_path / "b", progress=False, max_batches=2)
    a, b = load_checkpoint(tmp_path / "a" / "checkpoint.pt")["model"], load_checkpoint(tmp_path / "b" / "checkpoint.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    history = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert "attention_ramp" not in history[0] and history[0]["train_ac"] < cfg.classify.theta


def test_cli_refuses_a_variant_without_its_table_before_making_a_folder(tmp_path, capsys):
    from pipeline.cli import main

    out = tmp_path / "out"
    assert main(["classify", "train", "--variant", "icasc@val", "--out", str(out), "--quiet"]) == 2
    assert "variant 'icasc@val' needs a [classify.variant_overrides.\"icasc@val\"] table" in capsys.readouterr().err
    assert not out.exists()
