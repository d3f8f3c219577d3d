"""The names of the ranking metrics, in report order (no torch: consoles and reports read it)."""

PER_USER = ("precision", "recall", "ndcg", "mrr", "hit")  # means over the evaluated users
METRICS = (*PER_USER, "coverage")  # plus the catalogue share the top-K lists cover
