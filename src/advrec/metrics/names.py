"""The names of the ranking metrics, in report order (no torch: consoles and reports read it)."""

from advrec.metrics.functional import PER_USER_METRICS

PER_USER = tuple(PER_USER_METRICS)  # means over the evaluated users
METRICS = (*PER_USER, "coverage")  # plus the catalogue share the top-K lists cover
