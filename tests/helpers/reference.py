"""An independent, numpy-only scorer of recommendation lists (no advrec import).

Used to check that what advrec-recommend writes gives the metrics advrec-train reported.
"""

from __future__ import annotations

import numpy as np


def score_lists(recs: dict, truth: dict, k: int) -> dict[str, float]:
    """recs: user -> ranked item list; truth: user -> set of held-out items."""
    p, r, n, m, h = [], [], [], [], []
    for user, relevant in truth.items():
        if not relevant:
            continue
        ranked = list(recs.get(user, []))[:k]
        gains = np.array([1.0 if it in relevant else 0.0 for it in ranked])
        hits = gains.sum()
        dcg = float((gains / np.log2(np.arange(2, len(gains) + 2))).sum()) if len(gains) else 0.0
        idcg = float((1.0 / np.log2(np.arange(2, min(k, len(relevant)) + 2))).sum())
        first = np.flatnonzero(gains)
        p.append(hits / k)
        r.append(hits / len(relevant))
        n.append(dcg / idcg)
        m.append(1.0 / (first[0] + 1) if len(first) else 0.0)
        h.append(1.0 if hits else 0.0)
    return {
        f"precision@{k}": float(np.mean(p)),
        f"recall@{k}": float(np.mean(r)),
        f"ndcg@{k}": float(np.mean(n)),
        f"mrr@{k}": float(np.mean(m)),
        f"hit@{k}": float(np.mean(h)),
    }


def ranked_lists(recs) -> dict:
    """user -> items in rank order, from an advrec-recommend CSV read with pandas."""
    return {u: g.sort_values("rank").item_id.tolist() for u, g in recs.groupby("user_id")}


def assert_same_metrics(reported: dict, recs, truth: dict, ks=(5, 10, 20)) -> None:
    """The independent scores of the recommendation lists equal what advrec reported."""
    lists = ranked_lists(recs)
    for k in ks:
        for name, value in score_lists(lists, truth, k).items():
            got = reported[f"test/{name}"]
            assert abs(got - value) <= 1e-6, f"{name}: reported {got}, independent {value}"
