"""Ranking metrics for full-ranking evaluation."""

from advrec.metrics.ranking import RankingMetrics, topk_ranked

__all__ = ["RankingMetrics", "topk_ranked"]
