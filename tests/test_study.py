"""The study (issue 13): the paper's claims judged against the seed spread on hand-made reports, the
leaderboard, the README findings script, the optional pytorch-grad-cam extra, and the study configs."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.claims import (FAILS, HOLDS, NOISE, UNMEASURED, claims_markdown, compare, findings_markdown, judge,
                             paper_claims, pooled_sd)
from sharpen_core.config import Config, load_config
from pipeline.leaderboard import leaderboard, leaderboard_markdown
from pipeline.report import build_report
from pipeline.report_md import report_markdown

ROOT = Path(__file__).resolve().parent.parent


def _row(classifier: str, mechanism: str | None, **fields: list[float]) -> dict:
    """A per-seed-aggregated report row: each field from its per-seed values (mean, sample sd, values)."""
    row: dict = {"classifier": classifier, "mechanism": mechanism}
    for f, values in fields.items():
        mean = sum(values) / len(values)
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
        row.update({f: mean, f + "_std": sd, f + "_values": values})
    return row


# --------------------------------------------------------------------------- the rule

def test_pooled_sd_and_judge_known_answers():
    # s1 = 0.1 (n 3), s2 = 0.2 (n 3): sqrt((2·0.01 + 2·0.04) / 4) = sqrt(0.025)
    assert pooled_sd(0.1, 3, 0.2, 3) == pytest.approx(math.sqrt(0.025))
    # unequal n: (1·0.01 + 3·0.04) / 4 = 0.0325
    assert pooled_sd(0.1, 2, 0.2, 4) == pytest.approx(math.sqrt(0.0325))
    assert pooled_sd(None, 1, 0.2, 3) is None and pooled_sd(0.1, 1, 0.2, 3) is None
    assert judge(0.05, 0.01) == (pytest.approx(0.02), HOLDS)      # floor 0.02 beats 2·0.01
    assert judge(0.05, 0.03) == (pytest.approx(0.06), NOISE)      # 2·sd beats the floor
    assert judge(-0.07, 0.03) == (pytest.approx(0.06), FAILS)
    assert judge(0.019, None) == (0.02, NOISE) and judge(0.021, None) == (0.02, HOLDS)


def test_compare_orients_the_gain_by_the_claim():
    # cue mIoU: 0.30, 0.32, 0.34 (mean 0.32, sd 0.02) vs 0.20, 0.21, 0.22 (mean 0.21, sd 0.01)
    a = _row("baseline", "channel", cue_miou=[0.30, 0.32, 0.34])
    b = _row("baseline", "gradcam", cue_miou=[0.20, 0.21, 0.22])
    c = compare(a, b, "cue_miou")
    sp = math.sqrt((2 * 0.02 ** 2 + 2 * 0.01 ** 2) / 4)
    assert c["gain"] == pytest.approx(0.11) and c["pooled_sd"] == pytest.approx(sp)
    assert c["threshold"] == pytest.approx(max(2 * sp, 0.02)) and c["verdict"] == HOLDS
    assert c["better"] == "baseline/channel" and c["better_values"] == [0.30, 0.32, 0.34]
    # lower is better: icasc overlap 0.5 vs baseline 0.4 is a gain of -0.1
    lo = compare(_row("icasc", "channel", attention_overlap=[0.5, 0.5]),
                 _row("baseline", "channel", attention_overlap=[0.4, 0.4]), "attention_overlap", lower_is_better=True)
    assert lo["gain"] == pytest.approx(-0.1) and lo["pooled_sd"] == 0.0 and lo["verdict"] == FAILS
    assert compare(a, _row("baseline", "gradcam"), "cue_miou") is None


# claim (c)'s classifier-level measures (in every row of the classifier, as pipeline.collect writes them)
BASE_CLS = dict(cls_map=[0.50, 0.52, 0.54], overlap_gradcam_last=[0.15, 0.15, 0.15],
                overlap_channel_last=[0.82, 0.84, 0.86], overlap_gradcam_inner=[0.30, 0.31, 0.32],
                overlap_channel_inner=[0.50, 0.52, 0.54], cls_ks=[0.60, 0.62, 0.64])
ICASC_CLS = dict(cls_map=[0.49, 0.53, 0.55], overlap_gradcam_last=[0.10, 0.11, 0.12],
                 overlap_channel_last=[0.40, 0.42, 0.44], overlap_gradcam_inner=[0.20, 0.21, 0.22],
                 overlap_channel_inner=[0.40, 0.42, 0.44], cls_ks=[0.70, 0.72, 0.74])


def _study_rows(icasc: dict | None = None, *extra: dict) -> list[dict]:
    base = BASE_CLS
    return [
        _row("baseline", "gradcam", cue_miou=[0.20, 0.21, 0.22], seg_miou_crf=[0.30, 0.31, 0.32],
             attention_overlap=[0.9, 0.9, 0.9], **base),
        _row("baseline", "gradcampp", cue_miou=[0.30, 0.31, 0.32], seg_miou_crf=[0.30, 0.40, 0.50],
             attention_overlap=[0.8, 0.8, 0.8], **base),
        _row("baseline", "channel", cue_miou=[0.30, 0.32, 0.34], seg_miou_crf=[0.40, 0.41, 0.42],
             attention_overlap=[0.6, 0.62, 0.64], **base),
        _row("baseline", "layercam", cue_miou=[0.40, 0.40, 0.40], **base),
        _row("icasc", "channel", cue_miou=[0.3, 0.3, 0.3], attention_overlap=[0.40, 0.42, 0.44],
             **{**ICASC_CLS, **(icasc or {})}),
        *extra,
    ]


def test_paper_claims_on_a_hand_made_study():
    claims = paper_claims(_study_rows(), n_seeds=3)
    assert claims["n_seeds"] == 3 and [c["claim"] for c in claims["items"]] == ["a", "b", "c"]
    a, b, c = claims["items"]
    got = {(x["other"], x["metric"]): x["verdict"] for x in a["comparisons"]}
    # channel vs gradcam: +0.11 cue, +0.10 seg (quiet seeds) hold; vs gradcampp: cue +0.01 < 0.02 floor,
    # seg +0.01 against sd 0.1 of gradcampp (pooled sqrt((2·0.0001 + 2·0.01)/4) = 0.0711): within noise
    assert got == {("baseline/gradcam", "cue_miou"): HOLDS, ("baseline/gradcam", "seg_miou_crf"): HOLDS,
                   ("baseline/gradcampp", "cue_miou"): NOISE, ("baseline/gradcampp", "seg_miou_crf"): NOISE}
    assert a["verdict"] == NOISE and a["missing"] == []
    # (b): mAP 0.5233 vs 0.52: gain 0.0033 within noise
    assert b["verdict"] == NOISE and b["comparisons"][0]["gain"] == pytest.approx(1.57 / 3 - 0.52)
    # (c), from the measures icasc was not trained on, in order: Grad-CAM last 0.11 vs 0.15 (sd 0.01 vs 0:
    # pooled sqrt(2·0.0001/4) = 0.0071, threshold the 0.02 floor), channel inner 0.42 vs 0.52 (pooled 0.02,
    # threshold 0.04), Grad-CAM inner 0.21 vs 0.31, KS 0.72 vs 0.62 (higher is better): all hold
    assert c["variant"] == "icasc" and b["variant"] == "icasc" and "variant" not in a
    assert c["verdict_from"] == ["overlap_gradcam_last", "overlap_channel_inner", "overlap_gradcam_inner", "cls_ks"]
    assert c["reference"] == ["overlap_channel_last"]
    got = [(x["metric"], x["lower_is_better"], x["in_verdict"], x["verdict"]) for x in c["comparisons"]]
    assert got == [("overlap_gradcam_last", True, True, HOLDS), ("overlap_channel_inner", True, True, HOLDS),
                   ("overlap_gradcam_inner", True, True, HOLDS), ("cls_ks", False, True, HOLDS),
                   ("overlap_channel_last", True, False, HOLDS)]
    gains = [x["gain"] for x in c["comparisons"]]
    assert gains == pytest.approx([0.04, 0.10, 0.10, 0.10, 0.42])
    assert [x["threshold"] for x in c["comparisons"][:2]] == pytest.approx([0.02, 0.04])
    assert c["verdict"] == HOLDS and c["missing"] == []
    assert c["comparisons"][-1]["note"] == "ICASC's training objective: reference, not in the verdict"


def test_claim_c_leaves_the_training_objective_out_and_reads_ks_upwards():
    # the circular measure (channel-weighted L_AS at the last layer, icasc's own objective) against the claim:
    # the verdict does not move
    worse = paper_claims(_study_rows({"overlap_channel_last": [0.95, 0.95, 0.95]}), 3)["items"][2]
    assert worse["comparisons"][-1]["verdict"] == FAILS and worse["verdict"] == HOLDS
    # KS: higher is better; icasc's 0.52 vs the baseline's 0.62 goes against the claim
    ks = paper_claims(_study_rows({"cls_ks": [0.50, 0.52, 0.54]}), 3)["items"][2]
    assert ks["comparisons"][3]["gain"] == pytest.approx(-0.10) and ks["verdict"] == FAILS
    # a non-circular overlap within noise: the claim is within noise
    noisy = paper_claims(_study_rows({"overlap_gradcam_inner": [0.30, 0.30, 0.30]}), 3)["items"][2]
    assert noisy["verdict"] == NOISE
    # no inner-layer numbers (an evaluation from before they existed): named as missing, verdict from the rest
    rows = _study_rows()
    for key in ("overlap_gradcam_inner", "overlap_gradcam_inner_std", "overlap_gradcam_inner_values"):
        del rows[-1][key]
    old = paper_claims(rows, 3)["items"][2]
    assert old["missing"] == ["overlap_gradcam_inner of icasc or baseline"] and old["verdict"] == HOLDS


def test_claims_b_and_c_per_icasc_variant():
    """One item (b) and (c) per ICASC variant; a variant trained on Grad-CAM maps has Grad-CAM's last-layer
    overlap as its reference row and channel-weighted's in the verdict."""
    at_val = _row("icasc@val", "channel", **{**ICASC_CLS, "cls_map": [0.60, 0.60, 0.60]})
    on_gradcam = _row("icasc-gradcam", None, **{**ICASC_CLS, "overlap_channel_last": [0.95, 0.95, 0.95]})
    items = paper_claims(_study_rows(None, at_val, on_gradcam), 3)["items"]
    assert [(i["claim"], i.get("variant")) for i in items] == [
        ("a", None), ("b", "icasc"), ("b", "icasc@val"), ("b", "icasc-gradcam"),
        ("c", "icasc"), ("c", "icasc@val"), ("c", "icasc-gradcam")]
    assert items[2]["verdict"] == HOLDS and items[2]["comparisons"][0]["gain"] == pytest.approx(0.08)
    gradcam = items[6]
    assert gradcam["reference"] == ["overlap_gradcam_last"]
    assert gradcam["verdict_from"] == ["overlap_channel_inner", "overlap_gradcam_inner", "overlap_channel_last",
                                       "cls_ks"]
    # its channel-weighted last-layer overlap (0.95 vs 0.84) is not its objective: it enters, and fails the claim
    assert gradcam["verdict"] == FAILS and gradcam["comparisons"][-1]["metric"] == "overlap_gradcam_last"
    md = claims_markdown(paper_claims(_study_rows(None, at_val, on_gradcam), 3))
    assert "### (c, icasc-gradcam) ICASC separates" in md and "### (b, icasc@val) ICASC training" in md
    assert ("Verdict from: channel-weighted L_AS at the inner layer; Grad-CAM L_AS at the inner layer; "
            "channel-weighted L_AS at the last layer; KS distance (not from Grad-CAM L_AS at the last layer: "
            "ICASC's training objective).") in md
    assert ("| L_AS of Grad-CAM maps, last layer (lower is better) (ICASC's training objective: reference, not in "
            "the verdict) | icasc-gradcam 0.110 ± 0.010 | baseline 0.150 ± 0.000 | +0.040 | 0.020 | (holds) |") in md
    # a run without an ICASC variant: (b) and (c) for "icasc", not measured
    only_base = [r for r in _study_rows() if r["classifier"] == "baseline"]
    assert [(i["claim"], i.get("variant"), i["verdict"]) for i in paper_claims(only_base, 3)["items"][1:]] == [
        ("b", "icasc", UNMEASURED), ("c", "icasc", UNMEASURED)]


def test_a_claim_against_the_paper_and_missing_rows():
    rows = _study_rows()
    rows[2]["cue_miou"], rows[2]["cue_miou_values"] = 0.10, [0.10, 0.10, 0.10]  # channel far below gradcam
    assert paper_claims(rows, 3)["items"][0]["verdict"] == FAILS
    only = [r for r in _study_rows() if r["mechanism"] in ("gradcam", "layercam")]
    a, b, c = paper_claims(only, 3)["items"]
    assert a["verdict"] == UNMEASURED and "channel" in a["missing"][0]
    assert b["verdict"] == UNMEASURED and b["missing"] == ["icasc"]
    assert c["verdict"] == UNMEASURED and c["missing"] == ["icasc"]


def test_report_has_claims_and_a_leaderboard(tmp_path):
    summary = {"name": "study", "config": Config().to_dict(), "config_source": "configs/study.toml", "seeds": [0],
               "rows": [{k: r[k] for k in r if not k.endswith(("_std", "_values"))} for r in _study_rows()]}
    report = build_report(summary)
    # one seed: the 0.02 floor only; (a) channel vs gradcampp cue mIoU +0.01 keeps (a) within noise
    assert [c["verdict"] for c in report["claims"]["items"]] == [NOISE, NOISE, HOLDS]
    assert report["claims"]["items"][0]["comparisons"] and all(
        c["pooled_sd"] is None and c["threshold"] == 0.02 for c in report["claims"]["items"][0]["comparisons"])
    board = report["leaderboard"]
    assert [(e["rank"], e["mechanism"]) for e in board] == [(1, "layercam"), (2, "channel"), (3, "gradcampp"),
                                                            (4, "channel"), (5, "gradcam")]
    assert board[0]["kind"].startswith("pytorch-grad-cam") and board[1]["kind"].startswith("native")
    md = report_markdown(report)
    assert "## The paper's claims" in md and "## Leaderboard" in md and "layer `last`" in md
    assert "| 1 | baseline | layercam |" in md and "**holds**" in md
    assert leaderboard_markdown([]) == "No cue sets in this run.\n"


def test_leaderboard_puts_rows_without_cues_last():
    rows = [{"classifier": "icasc-gradcam", "mechanism": None, "cue_miou": None},
            {"classifier": "b", "mechanism": "eigencam", "cue_miou": None},
            {"classifier": "b", "mechanism": "gradcam", "cue_miou": 0.1}]
    assert [e["mechanism"] for e in leaderboard(rows)] == ["gradcam", "eigencam"]


def test_leaderboard_marks_a_best_tau_at_the_sweep_edge():
    rows = [{"classifier": "b", "mechanism": "gradcam", "cue_miou": 0.2, "cue_best_tau": 0.3},
            {"classifier": "b", "mechanism": "eigencam", "cue_miou": 0.1, "cue_best_tau": 0.05,
             "cue_best_tau_std": 0.0, "cue_tau_at_edge": True}]
    md = leaderboard_markdown(leaderboard(rows))
    assert ("| 1 | b | gradcam | native; channel weight = mean gradient (Eq. 1) | 20.0 | – | 0.30 | – | – | – | – "
            "| – |") in md
    assert "| 5.00 ± 0.00 |" not in md and "| 10.0 | – | 0.05 ± 0.00 ⚠ |" in md
    assert "⚠ the best cue mIoU is reached only at an end of the τ sweep" in md
    assert "⚠" not in leaderboard_markdown(leaderboard(rows[:1]))
    # a board written before the gain and the seeds at τ* were measured keeps its columns
    old = [{k: v for k, v in e.items() if not k.startswith(("cue_gain", "seed_precision_at", "seed_recall_at"))}
           for e in leaderboard(rows)]
    assert "| 1 | b | gradcam | native; channel weight = mean gradient (Eq. 1) | 20.0 | 0.30 | – | – | – |" in \
        leaderboard_markdown(old)


def test_leaderboard_lists_the_floors_unranked_among_the_cue_sets():
    rows = [{"classifier": "b", "mechanism": "gradcam", "cue_miou": 0.35, "cue_gain_over_floor": 0.05},
            {"classifier": "b", "mechanism": "channel", "cue_miou": 0.25, "cue_gain_over_floor": -0.05},
            {"classifier": "b", "mechanism": "eigencam", "cue_miou": None}]
    floors = [{"name": "floor-uniform", "best_miou": 0.2, "best_tau": 0.0, "seed_precision": 0.5},
              {"name": "floor-centre", "best_miou": 0.3, "best_miou_std": 0.01, "best_tau": 0.4, "tau_at_edge": True}]
    board = leaderboard(rows, floors)
    assert [(e["rank"], e["mechanism"]) for e in board] == [
        (1, "gradcam"), (None, "floor-centre"), (2, "channel"), (None, "floor-uniform"), (3, "eigencam")]
    assert [e["kind"] for e in board if e["floor"]] == ["floor: centred prior", "floor: labels over the whole image"]
    md = leaderboard_markdown(board)
    assert "| – | – | floor-centre | floor: centred prior | 30.0 ± 1.0 | – | 0.40 ⚠ | – | – | – | – | – |" in md
    assert "| – | – | floor-uniform | floor: labels over the whole image | 20.0 | – | 0.00 | 50.0 | – |" in md
    assert "| 2 | b | channel | native; channel weight = mean positive gradient (Eq. 2, ICASC) | 25.0 | -5.0 |" in md
    assert "Floors: the cue mIoU of maps that do not localize" in md and "⚠ the best cue mIoU" in md
    from cues.quality import FLOORS
    from pipeline.leaderboard import FLOOR_KINDS

    assert list(FLOOR_KINDS) == list(FLOORS)  # every floor the cues stage scores has its kind


# --------------------------------------------------------------------------- README findings

def test_update_readme_findings_from_a_synthetic_report(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    report = {"name": "study", "config_source": "configs/study.toml", "seeds": [0, 1, 2],
              "claims": paper_claims(_study_rows(), 3), "leaderboard": leaderboard(_study_rows()),
              "full_supervision_miou": 0.40, "full_supervision_miou_crf": 0.45, "full_supervision_miou_crf_std": 0.01,
              "total_wall_seconds": 4530.4, "peak_rss_mib": 1903.0}
    (run / "report.json").write_text(json.dumps(report))
    (run / "report.md").write_text("# Report: study\n")
    (run / "figures").mkdir()
    (run / "figures" / "tau_curves.png").write_bytes(b"\x89PNG fake")
    (run / "figures" / "notes.tmp").write_text("not a figure")
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- findings:begin -->\nSTALE TEXT\n<!-- findings:end -->\ntail\n")
    script = ROOT / "scripts" / "update_readme_findings.py"
    done = subprocess.run([sys.executable, str(script), str(run), "--readme", str(readme),
                           "--results", str(tmp_path / "results" / "study")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    text = readme.read_text()
    assert text.startswith("intro\n<!-- findings:begin -->\n") and text.endswith("<!-- findings:end -->\ntail\n")
    assert "STALE TEXT" not in text and findings_markdown(report) in text
    assert "- **(c, icasc) ICASC separates" in text
    assert (": holds.** Verdict from: Grad-CAM L_AS at the last layer; channel-weighted L_AS at the inner layer; "
            "Grad-CAM L_AS at the inner layer; KS distance (not from channel-weighted L_AS at the last layer: "
            "ICASC's training objective)." in text)
    assert ("  - L_AS of channel-weighted maps, last layer (ICASC's training objective: reference, not in the "
            "verdict): icasc 0.420 ± 0.020 vs baseline 0.840 ± 0.020, Δ +0.420 (threshold 0.040): (holds)") in text
    assert "  - KS distance, target vs most confusing class probabilities (higher is better): icasc 0.720" in text
    # the numbers as the report has them: channel 32.0 ± 2.0 vs gradcam 21.0 ± 1.0, Δ +11.0
    assert "baseline/channel 32.0 ± 2.0 vs baseline/gradcam 21.0 ± 1.0, Δ +11.0" in text
    assert "fully supervised reference): val mIoU with CRF 45.0 ± 1.0." in text
    assert "The run's stages took 1:15:30 in all (3 seeds), peak resident memory 1.86 GiB" in text
    # and the leaderboard, ranked, with mean ± sd
    assert leaderboard_markdown(report["leaderboard"]) in text
    assert "| 1 | baseline | layercam |" in text and "| 2 | baseline | channel | native; channel weight = mean positive gradient (Eq. 2, ICASC) | 32.0 ± 2.0" in text
    assert json.loads((tmp_path / "results" / "study" / "report.json").read_text()) == report
    assert (tmp_path / "results" / "study" / "report.md").read_text() == "# Report: study\n"
    assert [p.name for p in (tmp_path / "results" / "study" / "figures").iterdir()] == ["tau_curves.png"]
    assert (tmp_path / "results" / "study" / "figures" / "tau_curves.png").read_bytes() == b"\x89PNG fake"
    # a report without claims, and a README without markers: exit 2, one line
    (run / "report.json").write_text(json.dumps({"name": "old"}))
    bad = subprocess.run([sys.executable, str(script), str(run), "--readme", str(readme)], capture_output=True,
                         text=True, cwd=tmp_path)
    assert bad.returncode == 2 and "no 'claims'" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_the_repository_readme_findings_are_those_of_results_study():
    """The README's findings block is what the script writes from the kept report (no hand edits), and that
    report is a 3-seed study with every row measured on every seed, the mechanisms claim (a) compares and the floors."""
    text = (ROOT / "README.md").read_text()
    assert text.count("<!-- findings:begin -->") == 1 and text.count("<!-- findings:end -->") == 1
    block = text[text.index("<!-- findings:begin -->") + len("<!-- findings:begin -->"):
                 text.index("<!-- findings:end -->")]
    report = json.loads((ROOT / "results" / "study" / "report.json").read_text())
    assert block.strip("\n") == findings_markdown(report).strip("\n")
    assert report["n_seeds"] == 3 and report["config_source"] == "configs/study.toml"
    assert report["rows"] and all(r["seeds_present"] == 3 and len(r["cue_miou_values"]) == 3
                                  and None not in r["cue_miou_values"] for r in report["rows"])
    # the mechanisms claim (a) compares and both floors, every one ranked or listed
    assert {"gradcam", "gradcampp", "channel", "floor-uniform", "floor-centre"} <= \
        {e["mechanism"] for e in report["leaderboard"]}
    for name in ("report.md", "figures/tau_curves.png"):
        assert (ROOT / "results" / "study" / name).is_file(), name


# --------------------------------------------------------------------------- pytorch-grad-cam is optional

def test_adapter_cue_set_without_grad_cam_is_a_config_error(tmp_path, monkeypatch, capsys):
    from pipeline.cli import main

    monkeypatch.setitem(sys.modules, "pytorch_grad_cam", None)  # `import pytorch_grad_cam` now raises ImportError
    rc = main(["run", "--config", "configs/quick.toml", "--run-dir", str(tmp_path / "run"), "--quiet",
               "--set", f"data.root={tmp_path / 'data'}",
               "--set", 'run.cue_sets=["baseline:gradcam", "baseline:scorecam"]'])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "run.cue_sets" in err and "'scorecam'" in err and "pip install -e '.[cams]'" in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "data").exists()  # refused before any work
    # native cue sets need nothing extra
    from pipeline.plan import check_run_config

    check_run_config(load_config(ROOT / "configs" / "quick.toml"))


def test_cams_extra_is_declared():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["optional-dependencies"]["cams"] == ["grad-cam>=1.5.0"]
    assert "grad-cam>=1.5.0" in project["optional-dependencies"]["test"]
    assert not any(d.startswith("grad-cam") for d in project["dependencies"])


# --------------------------------------------------------------------------- the study configs

@pytest.mark.parametrize("name", ["study.toml", "study_gpu.toml"])
def test_study_configs_load(name):
    from sharpen_attention.mechanisms import REGISTRY
    from pipeline.plan import check_run_config

    cfg = load_config(ROOT / "configs" / name)
    check_run_config(cfg)
    mechanisms = {s.split(":")[1] for s in cfg.run.cue_sets}
    assert mechanisms <= set(REGISTRY)
    # the CPU study compares the paper's three native mechanisms (its budget goes to the segmenters);
    # the GPU study adds pytorch-grad-cam's
    assert len(mechanisms) >= (6 if name == "study_gpu.toml" else 3)
    assert {"baseline:gradcam", "baseline:gradcampp", "baseline:channel", "icasc:channel"} <= set(cfg.run.cue_sets)
    assert {"baseline", "icasc"} <= set(cfg.classify.variants)
    # a classifier on which the mechanisms really differ: VGG-19, or a ResNet's inner layer
    assert cfg.classify.arch == "vgg19" or cfg.cues.layer == "inner"
    if name == "study_gpu.toml":
        assert cfg.run.device == "cuda" and 224 <= cfg.classify.image_size <= 299


@pytest.mark.parametrize("arch,layer,ok", [("resnet18", "inner", True), ("resnet18", "layer3", True),
                                           ("vgg19", "inner", True), ("vgg19", "features.35", True),
                                           ("resnet18", "features.26", False), ("vgg19", "innr", False)])
def test_cue_layer_is_checked_before_the_run(arch, layer, ok):
    from sharpen_core.config import ConfigError
    from pipeline.plan import check_run_config

    cfg = load_config(ROOT / "configs" / "quick.toml", [f"classify.arch={arch}", f"cues.layer={layer}"])
    if ok:
        check_run_config(cfg)
    else:
        with pytest.raises(ConfigError, match=f"quick.toml: cues.layer: unknown layer '{layer}'"):
            check_run_config(cfg)


def test_segment_cue_sets_choose_the_segmenters_and_are_checked():
    from sharpen_core.config import ConfigError
    from sharpen_core.layout import RunLayout
    from pipeline.plan import check_run_config, segmenters

    sets = '["baseline:gradcam", "baseline:layercam", "icasc:channel"]'
    cfg = load_config(ROOT / "configs" / "quick.toml", [f"run.cue_sets={sets}"])
    check_run_config(cfg)  # default ["all"]: every cue set gets a segmenter
    assert [s[0] for s in segmenters(cfg, RunLayout("r"))] == ["baseline-gradcam", "baseline-layercam",
                                                                "icasc-channel", "full"]
    cfg = load_config(ROOT / "configs" / "quick.toml", [f"run.cue_sets={sets}",
                                                         'run.segment_cue_sets=["icasc:channel", "baseline:gradcam"]'])
    check_run_config(cfg)
    assert [(n, s) for n, _, s in segmenters(cfg, RunLayout("r"))] == [
        ("baseline-gradcam", "sec"), ("icasc-channel", "sec"), ("full", "full")]  # in run.cue_sets order
    cfg = load_config(ROOT / "configs" / "quick.toml", [f"run.cue_sets={sets}",
                                                         'run.segment_cue_sets=["baseline:channel"]'])
    with pytest.raises(ConfigError, match=r"quick.toml: run.segment_cue_sets entry 'baseline:channel' is not one "
                                          r"of run.cue_sets \(baseline:gradcam, baseline:layercam, icasc:channel\)"):
        check_run_config(cfg)


def test_findings_say_where_the_comparison_stands():
    """The best cue set's gain over the best floor, the best weak segmenter against the reference and the cue
    sets whose best τ is at a sweep edge, from the report's own rows."""
    from report_data import floors, row, summary

    edge = {**row("icasc", "channel", 0.25), "cue_tau_at_edge": True}
    report = build_report(summary([row("baseline", "gradcam", 0.40), row("baseline", "channel", 0.45), edge],
                                  floors=floors(uniform=0.20, centre=0.30)))
    report["claims"] = paper_claims(report["rows"], 1)
    text = findings_markdown(report)
    # channel: cue mIoU 45.0, 15.0 over the centre floor's 30.0; its segmenter 45 + 12 = 57.0 with CRF, over 75.0
    assert "- best cue set: baseline/channel 45.0 cue mIoU, +15.0 over the best floor (floor-centre 30.0)" in text
    assert "- best weak segmenter: baseline/channel 57.0 val mIoU with CRF, 0.76 × the fully supervised reference" \
        in text
    assert "- cue sets whose best τ is at an end of the sweep (in at least one seed): icasc/channel" in text
