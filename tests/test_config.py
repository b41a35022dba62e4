"""TOML configs into typed dataclasses; unknown keys and wrong types name the key and the file."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from sharpen_core.config import Config, ConfigError, config_from_dict, dump_toml, load_config
from sharpen_core.records import changed, config_part, fingerprint

CONFIG_DIR = Path(__file__).parent.parent / "configs"
SHIPPED = ("demo.toml", "quick.toml", "study.toml", "study_gpu.toml", "voc_resnet18_cls.toml", "voc_vgg19_sec.toml")


def test_every_shipped_config_is_checked():
    """A config added to configs/ joins SHIPPED, and with it the check below."""
    assert sorted(p.name for p in CONFIG_DIR.glob("*.toml")) == sorted(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_config_passes_the_run_check(name):
    """Each shipped config loads, holds exactly the values its file sets, and passes what `sharpen run`
    checks before it starts (stages, cue sets, mechanisms, variants, the cue layer of the architecture)."""
    from pipeline.plan import check_run_config

    path = CONFIG_DIR / name
    cfg = load_config(path)
    check_run_config(cfg)
    assert cfg.source == str(path)
    raw = tomllib.loads(path.read_text())
    assert raw["run"]["name"] and cfg.run.cue_sets and cfg.run.stages
    held = cfg.to_dict()  # every key the file sets holds the file's value (none dropped, renamed or defaulted)
    assert {section: {key: held[section][key] for key in values} for section, values in raw.items()} == raw


def test_defaults_follow_spec():
    cfg = Config()
    assert (cfg.classify.sigma, cfg.classify.omega, cfg.classify.theta) == (0.55, 100.0, 0.8)
    assert (cfg.segment.decay_fg, cfg.segment.decay_bg) == (0.996, 0.999)
    assert cfg.cues.fg_threshold == 0.2 and cfg.cues.bg_fraction == 0.1
    assert (cfg.eval.tau_min, cfg.eval.tau_max, cfg.eval.tau_step) == (0.0, 1.0, 0.01)  # docs/method.md §6.2
    assert cfg.segment.crf_train_labels == "all"  # SEC's reference code (docs/method.md §5)


def test_unknown_key_names_key_and_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[classify]\nlr = 0.1\nlearning_rate = 0.2\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and "classify.learning_rate" in str(err.value)
    assert "valid keys of [classify]" in str(err.value)


def test_unknown_section(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[trainer]\nlr = 0.1\n")
    with pytest.raises(ConfigError, match=r"c.toml: unknown section \[trainer\]"):
        load_config(path)


def test_wrong_type(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[classify]\nepochs = "ten"\n')
    with pytest.raises(ConfigError, match=r"c.toml: classify.epochs: expected an integer, got 'ten'"):
        load_config(path)
    path.write_text("[cues]\nscales = [1.0, \"x\"]\n")
    with pytest.raises(ConfigError, match=r"cues.scales\[1\]: expected a number"):
        load_config(path)


def test_overrides_are_typed(tmp_path):
    cfg = load_config(None, ["classify.lr=0.02", "cues.scales=[1.0, 0.5]", "data.root=/data/VOC2012",
                             "classify.amp=false", "classify.epochs=3", "classify.momentum=1"])
    assert cfg.classify.lr == 0.02 and cfg.cues.scales == [1.0, 0.5] and cfg.data.root == "/data/VOC2012"
    assert cfg.classify.amp is False and cfg.classify.epochs == 3
    assert cfg.classify.momentum == 1.0 and type(cfg.classify.momentum) is float  # an int given for a float key


def test_override_errors():
    with pytest.raises(ConfigError, match=r"--set 'classify.lrr=1': unknown key 'classify.lrr'"):
        load_config(None, ["classify.lrr=1"])
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_config(None, ["classify.lr"])
    with pytest.raises(ConfigError, match="classify.epochs: expected an integer"):
        load_config(None, ["classify.epochs=2.5"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[run\n")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        load_config(bad)


def test_dump_round_trip_and_hash():
    cfg = load_config(None, ["classify.lr=0.5", "data.root=a b"])
    again = config_from_dict(tomllib.loads(dump_toml(cfg)))
    assert again.to_dict() == cfg.to_dict()
    assert fingerprint(config_part(again, "run.data")) == fingerprint(config_part(cfg, "run.data"))
    other = load_config(None, ["data.root=c"])
    assert fingerprint(config_part(other, "run.data")) != fingerprint(config_part(cfg, "run.data"))
    assert fingerprint(config_part(other, "run.classify")) != fingerprint(config_part(cfg, "run.classify"))


def test_removed_key_is_a_clear_error(tmp_path):
    old = tmp_path / "old.toml"
    old.write_text("[cues]\nmechanisms = ['gradcam']\n")
    with pytest.raises(ConfigError, match=r"old.toml: config key 'cues.mechanisms' was removed: .*run.cue_sets"):
        load_config(old)
    with pytest.raises(ConfigError, match=r"--set 'cues.mechanisms=\[\]': config key 'cues.mechanisms' was removed"):
        load_config(None, ["cues.mechanisms=[]"])


def test_outputs_depend_on_the_declared_keys_only():
    """One list (sharpen_core.records.DEPENDS) decides when each output is stale: loader workers never
    do, prediction settings do not orphan a trained segmenter, the seed and training keys do."""
    base = load_config(None, [])
    part = config_part(base, "classifier")
    assert part["run.seed"] == 0 and part["classify.lr"] == base.classify.lr and "data.num_workers" not in part
    assert "run.device" not in part and "segment.lr" not in part
    for output in ("classifier", "segmenter", "run.data"):
        workers = load_config(None, ["data.num_workers=7"])
        assert fingerprint(config_part(workers, output)) == fingerprint(config_part(base, output))
    predict = load_config(None, ["segment.predict_scales=[1.0]", "segment.predict_crf=off"])
    assert fingerprint(config_part(predict, "segmenter")) == fingerprint(config_part(base, "segmenter"))
    for change, output in (("run.seed=1", "classifier"), ("run.seed=1", "segmenter"), ("segment.lr=0.5", "segmenter"),
                           ("data.root=x", "classifier"), ("cues.grid=8", "run.cues")):
        assert fingerprint(config_part(load_config(None, [change]), output)) != \
            fingerprint(config_part(base, output)), change
    assert changed({"a": 1, "b": 2, "p": "x"}, {"a": 1, "b": 3, "p": "y"}, ignore=("p",)) == {"b": (2, 3)}
