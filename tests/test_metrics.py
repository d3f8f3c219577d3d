import math

import numpy as np
import pytest
import torch

from advrec.metrics import RankingMetrics, topk_ranked
from tests.helpers.reference import score_lists

INF = float("-inf")


def _compute(scores, target, ks=(1, 3), n_items=None):
    m = RankingMetrics(ks, n_items=n_items)
    m.update(torch.tensor(scores, dtype=torch.float32), torch.tensor(target, dtype=torch.bool))
    return {k: float(v) for k, v in m.compute().items()}, m


def test_hand_computed_two_users():
    # user 0 ranks [0,1,2]: the hit is at rank 3; user 1 ranks [1,2,4]: one of 2 targets at rank 3
    scores = [[3, 2, 1, 0, -1], [0.5, 0.9, 0.8, 0.1, 0.7]]
    target = [[0, 0, 1, 0, 0], [1, 0, 0, 0, 1]]
    got, _ = _compute(scores, target)
    assert got["precision@3"] == pytest.approx(1 / 3)
    assert got["recall@3"] == pytest.approx((1 + 0.5) / 2)
    ndcg_u0 = 1 / math.log2(4)
    ndcg_u1 = (1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert got["ndcg@3"] == pytest.approx((ndcg_u0 + ndcg_u1) / 2)
    assert got["mrr@3"] == pytest.approx(1 / 3)
    assert got["hit@3"] == 1.0
    assert got["precision@1"] == got["ndcg@1"] == got["hit@1"] == 0.0


def test_ties_break_towards_lower_item_index():
    vals, idx = topk_ranked(torch.ones(1, 6), 3)
    assert idx.tolist() == [[0, 1, 2]]
    # a tie that straddles the k-th position: items 1, 3 and 5 tie for second place
    vals, idx = topk_ranked(torch.tensor([[0.1, 0.5, 0.2, 0.5, 0.9, 0.5]]), 3)
    assert idx.tolist() == [[4, 1, 3]]
    got, _ = _compute([[1.0, 1.0, 1.0, 1.0]], [[0, 0, 0, 1]], ks=(3,))
    assert got["hit@3"] == 0.0  # item 3 loses the tie to items 0, 1, 2


def test_topk_ranked_agrees_with_stable_sort_on_random_ties():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (50, 40), generator=g).float()
    _, idx = topk_ranked(scores, 10)
    ref = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :10]
    assert torch.equal(idx, ref)


def test_fewer_targets_than_k_uses_min_k_in_idcg():
    got, _ = _compute([[5, 4, 3, 2, 1]], [[1, 0, 0, 0, 0]], ks=(3,))
    assert got["ndcg@3"] == pytest.approx(1.0)
    assert got["recall@3"] == 1.0
    assert got["precision@3"] == pytest.approx(1 / 3)


def test_users_without_targets_are_left_out_and_counted():
    got, m = _compute([[5, 4, 3], [5, 4, 3]], [[1, 0, 0], [0, 0, 0]], ks=(1,))
    assert got["precision@1"] == 1.0
    assert int(m.n_users) == 1 and int(m.n_users_without_targets) == 1


def test_all_negative_scores_still_count_hits():
    got, _ = _compute([[-3.0, -1.0, -2.0]], [[0, 1, 0]], ks=(1,))
    assert got["precision@1"] == got["recall@1"] == got["mrr@1"] == 1.0


def test_masked_items_never_hit_even_when_in_topk():
    # only one unmasked item; the masked target falls into the top-3 but cannot count
    got, _ = _compute([[INF, 0.3, INF, INF]], [[0, 0, 1, 0]], ks=(3,))
    assert got["hit@3"] == 0.0


def test_coverage():
    got, _ = _compute([[3, 2, 1, 0], [0, 1, 2, 3]], [[1, 0, 0, 0]] * 2, ks=(1,), n_items=4)
    assert got["coverage@1"] == pytest.approx(0.5)


def test_k_larger_than_catalogue_is_refused():
    with pytest.raises(ValueError, match="exceeds the number of items"):
        _compute([[1.0, 2.0]], [[1, 0]], ks=(5,))


def test_merged_shards_equal_one_pass():
    """Sum states: two shards merged (as DDP's sum reduction does) equal one pass."""
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(37, 30, generator=g)
    target = torch.rand(37, 30, generator=g) < 0.1
    whole = RankingMetrics((5, 10), n_items=30)
    whole.update(scores, target)
    a, b = RankingMetrics((5, 10), n_items=30), RankingMetrics((5, 10), n_items=30)
    a.update(scores[:20], target[:20])
    b.update(scores[20:], target[20:])
    a.merge_state(b)
    for key, val in whole.compute().items():
        assert float(a.compute()[key]) == pytest.approx(float(val), abs=1e-7)


def test_matches_independent_numpy_scorer():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(60, 80)).astype(np.float32)
    target = rng.random((60, 80)) < 0.08
    m = RankingMetrics((5, 20))
    m.update(torch.from_numpy(scores), torch.from_numpy(target))
    got = m.compute()
    recs = {u: list(np.argsort(-scores[u], kind="stable")) for u in range(60)}
    truth = {u: set(np.flatnonzero(target[u])) for u in range(60)}
    for k in (5, 20):
        for name, val in score_lists(recs, truth, k).items():
            assert float(got[name]) == pytest.approx(val, abs=1e-6), name


def test_k_equal_to_catalogue_size():
    vals, idx = topk_ranked(torch.tensor([[0.2, 0.9, 0.2]]), 3)
    assert idx.tolist() == [[1, 0, 2]]


def test_equals_torchmetrics_retrieval_on_positive_scores():
    from torchmetrics.retrieval import RetrievalNormalizedDCG, RetrievalRecall

    g = torch.Generator().manual_seed(4)
    scores = torch.rand(40, 50, generator=g) + 0.01
    target = torch.rand(40, 50, generator=g) < 0.1
    ours = RankingMetrics((10,))
    ours.update(scores, target)
    got = ours.compute()
    idx = torch.arange(40).repeat_interleave(50)
    for cls, name in ((RetrievalNormalizedDCG, "ndcg@10"), (RetrievalRecall, "recall@10")):
        ref = cls(top_k=10, empty_target_action="skip")
        ref.update(scores.flatten(), target.flatten(), indexes=idx)
        assert float(got[name]) == pytest.approx(float(ref.compute()), abs=1e-6)


def test_map_matches_a_hand_computed_example():
    """MAP@k, the metric added as one entry of metrics/functional.py: targets {0, 2, 5},
    ranked 0, 1, 2, 3, 4 -> hits at ranks 1 and 3: (1/1 + 2/3) / min(5, 3); at k=2:
    (1/1) / min(2, 3)."""
    from advrec.metrics import RankingMetrics

    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0, 0.0]])
    target = torch.tensor([[True, False, True, False, False, True]])
    m = RankingMetrics((2, 5), n_items=6, per_user=True)
    m.update(scores, target, torch.tensor([0]))
    got = m.compute()
    assert got["map@5"] == pytest.approx((1 + 2 / 3) / 3)
    assert got["map@2"] == pytest.approx(1 / 2)
