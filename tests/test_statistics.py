"""Per-user results and the paired statistics advrec-report builds on them."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as sps

from advrec import stats
from advrec.api import read_report
from advrec.errors import AdvrecError
from advrec.metrics import PER_USER, RankingMetrics
from advrec.metrics.per_user import as_frame, read_per_user, write_per_user
from advrec.report import make_report
from tests.helpers import run_cli

TINY = [
    "data=synthetic",
    "data.source.n_users=120",
    "data.source.n_items=60",
    "data.source.n_interactions=1500",
    "logger=csv",
]


# -- the statistics against hand-computed examples ------------------------------------------
def test_holm_matches_a_hand_computed_example():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = .02, .03, .06, .04 -> monotone .06
    got = stats.holm([0.01, 0.04, 0.03, 0.005])
    assert got == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # NaN (an untested comparison) is neither adjusted nor counted; capped at 1
    got = stats.holm([0.3, np.nan, 0.6])
    assert got[1] != got[1] and got[0] == pytest.approx(0.6) and got[2] == pytest.approx(0.6)
    assert stats.holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])


def test_paired_tests_match_a_hand_example_and_scipy():
    diff = np.array([1.0, -2.0, 3.0, 4.0, 5.0])
    got = stats.paired_tests(diff)
    # Wilcoxon exact: |d| ranks 1..5, W- = 2; subsets of {1..5} summing to <= 2: {}, {1}, {2}
    assert got["wilcoxon_p"] == pytest.approx(2 * 3 / 32)
    # t = mean / (sd / sqrt(n)) = 2.2 / sqrt(7.7 / 5), 4 degrees of freedom
    t = 2.2 / np.sqrt(7.7 / 5)
    assert got["ttest_p"] == pytest.approx(2 * sps.t.sf(t, 4))
    assert got["effect_dz"] == pytest.approx(2.2 / np.sqrt(7.7))
    assert got["mean_diff"] == pytest.approx(2.2) and got["n_users"] == 5
    rng = np.random.default_rng(3)
    a, b = rng.random(200), rng.random(200) + 0.05
    got = stats.paired_tests(b - a)
    assert got["wilcoxon_p"] == pytest.approx(sps.wilcoxon(b, a).pvalue)
    assert got["ttest_p"] == pytest.approx(sps.ttest_rel(b, a).pvalue)
    assert got["boot_lo"] < got["mean_diff"] < got["boot_hi"]
    assert stats.paired_tests(b - a) == got  # the bootstrap is seeded


def test_identical_results_are_no_difference():
    got = stats.paired_tests(np.zeros(50))
    assert got["wilcoxon_p"] == 1.0 and got["ttest_p"] == 1.0 and got["effect_dz"] == 0.0
    assert got["boot_lo"] == got["boot_hi"] == 0.0
    with pytest.raises(AdvrecError, match="two or more users"):
        stats.paired_tests(np.zeros(1))


def test_seed_interval_is_a_t_interval():
    mean, lo, hi = stats.seed_interval([0.01, 0.03, 0.02])
    half = sps.t.ppf(0.975, 2) * 0.01 / np.sqrt(3)
    assert (mean, lo, hi) == pytest.approx((0.02, 0.02 - half, 0.02 + half))
    assert np.isnan(stats.seed_interval([0.01])[1])


# -- per-user values ---------------------------------------------------------------------------
def test_per_user_values_average_to_the_metric():
    torch.manual_seed(0)
    metric = RankingMetrics((1, 5), n_items=30, per_user=True)
    for start in (0, 8):
        scores, target = torch.randn(8, 30), torch.rand(8, 30) < 0.2
        target[0] = False  # a user without a target: in no mean, in no row
        metric.update(scores, target, torch.arange(start, start + 8).flip(0))
    out = metric.compute()
    table = metric.per_user_values
    assert table["users"].tolist() == sorted(set(range(16)) - {7, 15})
    frame = as_frame(table, np.arange(100, 116), metric.ks)
    assert frame["user"].tolist() == [100 + u for u in table["users"].tolist()]
    for name in PER_USER:
        for k in (1, 5):
            assert frame[f"{name}@{k}"].mean() == pytest.approx(float(out[f"{name}@{k}"]), 1e-6)


def test_a_per_user_file_round_trips_and_stays_small(tmp_path):
    n = 138_493  # ML-20M's users, every metric at 3 cut-offs
    rng = np.random.default_rng(0)
    table = {
        "users": np.arange(n),
        "n_targets": rng.integers(1, 50, n),
        "values": rng.random((n, len(PER_USER), 3)).astype(np.float32),
    }
    frame = as_frame(table, np.arange(n) * 7, [5, 10, 20])
    path = write_per_user(tmp_path / "per_user_test.parquet", frame)
    pd.testing.assert_frame_equal(read_per_user(path), frame)
    assert path.stat().st_size < 17e6  # random values; real ones (many 0s and 1s) pack tighter
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(AdvrecError, match="not a readable per-user file"):
        read_per_user(tmp_path / "bad.parquet")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("per_user")
    run_cli("train", *TINY, "model=ease", "per_user=[test,val]", f"hydra.run.dir={out}", cwd=out)
    return out


def test_advrec_train_writes_per_user_files_that_match_metrics_json(run):
    m = json.loads((run / "metrics.json").read_text())
    for split in ("test", "val"):
        frame = read_per_user(run / f"per_user_{split}.parquet")
        assert len(frame) == m[f"{split}/n_users"] and frame["user"].is_monotonic_increasing
        for col in frame.columns[2:]:
            assert frame[col].mean() == pytest.approx(m[f"{split}/{col}"], abs=1e-6), col
    assert m["dataset"]["test_fingerprint"] and m["adversarial"] is False


def test_advrec_eval_writes_the_same_per_user_file(run, tmp_path):
    run_cli("eval", f"ckpt_path={run / 'checkpoints' / 'final.ckpt'}",
            f"hydra.run.dir={tmp_path}", cwd=tmp_path)  # fmt: skip
    again = read_per_user(tmp_path / "per_user_test.parquet")
    pd.testing.assert_frame_equal(again, read_per_user(run / "per_user_test.parquet"))


def test_a_bad_per_user_setting_is_one_line_and_overwrite_clears_old_files(run, tmp_path):
    proc = run_cli("train", *TINY, "model=pop", "per_user=[tset]", f"hydra.run.dir={tmp_path}",
                   cwd=tmp_path, check=False)  # fmt: skip
    assert proc.returncode == 2 and "per_user=" in proc.stderr and "'tset'" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "metrics.json").exists()
    # a rerun over a run dir never leaves the old run's per-user files beside new results
    (tmp_path / "per_user_val.parquet").write_bytes((run / "per_user_val.parquet").read_bytes())
    run_cli("train", *TINY, "model=pop", "overwrite=true", f"hydra.run.dir={tmp_path}",
            cwd=tmp_path)  # fmt: skip
    assert not (tmp_path / "per_user_val.parquet").exists()
    assert (tmp_path / "per_user_test.parquet").is_file()


# -- the report's comparison -----------------------------------------------------------------
def _fake_run(root, name, label, seed, values, split="abc"):
    """A run folder: metrics.json and per_user_test.parquet with `values` as NDCG@20."""
    d = root / name
    d.mkdir()
    users = np.arange(len(values))
    frame = pd.DataFrame({"user": users, "n_targets": np.ones(len(values), np.int32)})
    for m in ("precision", "recall", "ndcg"):
        frame[f"{m}@20"] = np.asarray(values, np.float32)
    write_per_user(d / "per_user_test.parquet", frame)
    metrics = {"model": label, "label": label, "data": "d", "protocol": "validated",
               "seed": seed, "dataset": {"test_fingerprint": split}, "wall_time_s": 1.0,
               **{f"test/{m}@20": float(frame[f"{m}@20"].mean())
                  for m in ("precision", "recall", "ndcg")}}  # fmt: skip
    (d / "metrics.json").write_text(json.dumps(metrics))


def test_a_report_of_two_identical_models_says_no_difference(tmp_path):
    rng = np.random.default_rng(0)
    for seed in (1, 2):
        values = rng.random(60)
        _fake_run(tmp_path, f"a{seed}", "A", seed, values)
        _fake_run(tmp_path, f"b{seed}", "B", seed, values)
    make_report([str(tmp_path)], tmp_path / "rep", baseline="A")
    comp = pd.read_csv(tmp_path / "rep" / "comparison.csv")
    assert len(comp) == 3 and (comp["status"] == "paired").all()
    assert (comp["mean_diff"] == 0).all() and (comp["holm_p"] == 1).all()
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| baseline |" in md and "+0.0000 ns" in md


def test_a_better_model_is_marked_and_unpaired_runs_say_why(tmp_path):
    rng = np.random.default_rng(1)
    for seed in (1, 2, 3):
        base = rng.random(80) * 0.5
        _fake_run(tmp_path, f"a{seed}", "A", seed, base)
        _fake_run(tmp_path, f"b{seed}", "B", seed, base + 0.1 + rng.normal(0, 0.01, 80))
        _fake_run(tmp_path, f"c{seed}", "C", seed, base, split="other")  # another test split
    make_report([str(tmp_path)], tmp_path / "rep")  # the baseline: the best mean (B)
    comp = pd.read_csv(tmp_path / "rep" / "comparison.csv").set_index(["label", "metric"])
    a = comp.loc[("A", "test/ndcg@20")]
    assert a["status"] == "paired" and a["n_seeds"] == 3 and a["holm_p"] < 0.01
    assert a["mean_diff"] == pytest.approx(-0.1, abs=0.01) and a["seed_lo"] < a["seed_hi"] < 0
    assert comp.loc[("C", "test/ndcg@20"), "status"].startswith("no run pair")
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "‡" in md and "n/a: no run pair" in md and "Holm" in md
    tex = (tmp_path / "rep" / "report.tex").read_text()
    assert r"\textbf{" in tex and r"$\pm$" in tex and "vs baseline" in tex
    with pytest.raises(AdvrecError, match="no group has that label"):
        make_report([str(tmp_path)], tmp_path / "rep2", baseline="Z")
    table = read_report(tmp_path / "rep")  # the Python API's reader
    assert sorted(table["label"]) == ["A", "B", "C"] and "vs" in table
