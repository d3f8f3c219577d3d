"""Every per-user ranking metric as one entry of `PER_USER_METRICS`: name -> f(ranked, k)
giving each user's value at cut-off k. `RankingMetrics`, its per-user files, the console
table and the reports all read this table, so adding a metric is adding one function here
(no torch import: the report reads the names without it).

`ranked` holds, for a batch of users with at least one target, their top-K as computed once
(kmax = the largest cut-off): `hits` (B, kmax) float64 1/0, `n_hits` its running sum, `dcg`
the running discounted gain (1 / log2(rank + 1)), `idcg` the ideal running gain (kmax,),
`n_rel` each user's number of targets, `first` the 0-based rank of the first hit (kmax if
none), `ranks` 1..kmax as float64.
"""

from __future__ import annotations


def precision(r, k: int):
    """hits in the top k / k."""
    return r.n_hits[:, k - 1] / k


def recall(r, k: int):
    """hits in the top k / the user's targets."""
    return r.n_hits[:, k - 1] / r.n_rel


def ndcg(r, k: int):
    """DCG@k over the ideal DCG of min(k, targets) hits (binary gain)."""
    return r.dcg[:, k - 1] / r.idcg[r.n_rel.clamp(max=k) - 1]


def mrr(r, k: int):
    """1 / rank of the first hit within k, else 0."""
    return (r.first < k).to(r.hits.dtype) / (r.first.to(r.hits.dtype) + 1)


def hit(r, k: int):
    """1 if any target is in the top k."""
    return (r.n_hits[:, k - 1] > 0).to(r.hits.dtype)


def map_(r, k: int):
    """Average precision@k: the precision at each hit's rank, summed, over min(k, targets)."""
    at_hits = (r.n_hits[:, :k] / r.ranks[:k] * r.hits[:, :k]).sum(1)
    return at_hits / r.n_rel.clamp(max=k)


PER_USER_METRICS = {
    "precision": precision,
    "recall": recall,
    "ndcg": ndcg,
    "mrr": mrr,
    "hit": hit,
    "map": map_,
}
