"""Ranking metrics for full-ranking evaluation."""

from advrec.metrics.names import METRICS, PER_USER

__all__ = ["METRICS", "PER_USER", "RankingMetrics", "topk_ranked"]


def __getattr__(name: str):
    """`RankingMetrics` / `topk_ranked` import torch only when used (reports never are)."""
    if name in ("RankingMetrics", "topk_ranked"):
        from advrec.metrics import ranking

        return getattr(ranking, name)
    raise AttributeError(name)
