"""Published numbers on the real CFGAN ML100K split (skipped when the data is absent)."""

import json

import pandas as pd
import pytest

from tests.helpers import DATA_DIR, needs_data, run_cli, run_recommend
from tests.helpers.reference import assert_same_metrics

pytestmark = [needs_data("cfgan-splits", "ML100K", "ML100K.train"), pytest.mark.slow]


def train(tmp_path, *overrides):
    run = tmp_path / "run"
    run_cli("train", *overrides, "logger=csv", f"hydra.run.dir={run}", cwd=tmp_path)
    return json.loads((run / "metrics.json").read_text())


def test_ease_lambda_500_matches_ecir2022(tmp_path):
    m = train(tmp_path, "experiment=ease_cfgan_ml100k_paper")
    assert m["test/ndcg@20"] == pytest.approx(0.436, abs=0.002)  # published .4368
    assert m["test/precision@20"] == pytest.approx(0.293, abs=0.002)  # published .2929
    assert m["optimistic"] is True


def test_toppop_matches_ecir2022(tmp_path):
    m = train(tmp_path, "experiment=toppop_cfgan_ml100k")
    assert m["test/ndcg@20"] == pytest.approx(0.213, abs=0.002)  # published .2132


def test_ease_validated_and_recommendations_score_the_same(tmp_path):
    m = train(tmp_path, "experiment=ease_cfgan_ml100k")
    assert m["test/ndcg@20"] >= 0.433
    assert m["optimistic"] is False and len(m["selection"]) > 1
    out = tmp_path / "recs.csv"
    run_recommend(m["checkpoint"], out, tmp_path)
    test = pd.read_csv(DATA_DIR / "cfgan-splits/ML100K/ML100K.test", sep=r"\s+", header=None)
    assert_same_metrics(m, pd.read_csv(out), {u: set(g[1]) for u, g in test.groupby(0)})
