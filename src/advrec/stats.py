"""Paired comparisons of runs: per-user tests, seed-level intervals, Holm's correction.

Two groups of runs (two models, a few seeds each) are compared on one metric by pairing runs
that share a seed and a test split (the same `test_fingerprint` in metrics.json), and within
a pair the users by raw id (`per_user_test.parquet`):

- user level: each user's difference, averaged over the paired seeds; the two-sided Wilcoxon
  signed-rank test (zero differences dropped, Wilcoxon's method) and the paired t-test on
  them; the effect size d_z = mean / sd of those differences; a 95 % percentile bootstrap
  interval of their mean (users resampled, 2,000 draws, seeded: the same files give the
  same interval).
- seed level (two or more paired seeds): the mean over seeds of each seed's mean difference
  with a 95 % t-interval (n_seeds - 1 degrees of freedom).

Holm-Bonferroni adjusts the Wilcoxon p-values over every comparison of a table (`holm`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from advrec.errors import AdvrecError
from advrec.metrics.per_user import file_name, read_per_user

N_BOOT = 2000


def paired_tests(diff: np.ndarray, seed: int = 0, n_boot: int = N_BOOT) -> dict:
    """Tests of "mean difference = 0" on per-user differences (one value per user)."""
    diff = np.asarray(diff, dtype=np.float64)
    n = len(diff)
    if n < 2:
        raise AdvrecError(f"a paired test needs two or more users; {n} paired")
    mean, sd = float(diff.mean()), float(diff.std(ddof=1))
    if not np.any(diff):  # identical results: nothing to test, and scipy would divide by 0
        w_p = t_p = 1.0
    else:
        w_p = float(stats.wilcoxon(diff, zero_method="wilcox").pvalue)
        t_p = float(stats.ttest_1samp(diff, 0.0).pvalue) if sd > 0 else 0.0
    lo, hi = bootstrap_interval(diff, seed, n_boot)
    return {
        "n_users": n,
        "mean_diff": mean,
        "wilcoxon_p": w_p,
        "ttest_p": t_p,
        "effect_dz": mean / sd if sd > 0 else 0.0,
        "boot_lo": lo,
        "boot_hi": hi,
    }


def bootstrap_interval(
    diff: np.ndarray, seed: int = 0, n_boot: int = N_BOOT, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of the mean over `n_boot` resamples of the users."""
    rng = np.random.default_rng(seed)
    n, means = len(diff), []
    chunk = max(1, min(n_boot, 5_000_000 // max(n, 1)))  # bounded memory on large data
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        means.append(diff[idx].mean(1))
    q = (1 - level) / 2
    lo, hi = np.quantile(np.concatenate(means), [q, 1 - q])
    return float(lo), float(hi)


def seed_interval(seed_means: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean of per-seed differences and its t-interval; the bounds are NaN for one seed."""
    x = np.asarray(seed_means, dtype=np.float64)
    mean = float(x.mean())
    if len(x) < 2:
        return mean, float("nan"), float("nan")
    half = stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return mean, float(mean - half), float(mean + half)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1; NaN stays NaN
    and is not counted among the tests)."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    running = 0.0
    for rank, i in enumerate(ok[np.argsort(p[ok], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


# -- pairing runs ------------------------------------------------------------------------------
def _per_user(run: str, cache: dict) -> pd.DataFrame | None:
    path = Path(run) / file_name("test")
    if path not in cache:
        cache[path] = read_per_user(path).set_index("user") if path.is_file() else None
    return cache[path]


def compare_groups(
    base: pd.DataFrame, other: pd.DataFrame, column: str, cache: dict | None = None
) -> dict:
    """`other` minus `base` on `column` (e.g. test/ndcg@20): runs paired by seed and test
    split, users by raw id. Returns the tests, or {"status": why} when nothing pairs."""
    cache = {} if cache is None else cache
    metric = column.split("/", 1)[1]
    keys = ["seed", "test_split"]
    if any(k not in base or k not in other for k in keys):
        return {"status": "no seed or test split recorded"}
    pairs = base.merge(other, on=keys, suffixes=("_a", "_b"))
    pairs = pairs[pairs["test_split"].notna() & (pairs["test_split"].astype(str) != "None")]
    if pairs.empty:
        return {"status": "no run pair shares a seed and a test split"}
    if pairs.duplicated(keys).any():
        return {"status": "several runs share one seed and split in a group"}
    diffs, seed_means = [], []
    for _, p in pairs.iterrows():
        a, b = _per_user(p["run_a"], cache), _per_user(p["run_b"], cache)
        if a is None or b is None:
            return {"status": "per-user results missing (runs older than per_user files)"}
        if metric not in a or metric not in b:
            return {"status": f"{metric} is not in the per-user files (other ks?)"}
        d = (b[metric].astype(np.float64) - a[metric].astype(np.float64)).dropna()
        if len(d) != len(a) or len(d) != len(b):
            return {"status": "paired runs evaluated different users"}
        diffs.append(d)
        seed_means.append(float(d.mean()))
    per_user = pd.concat(diffs, axis=1).mean(axis=1).to_numpy()
    out = {"status": "paired", "n_seeds": len(pairs), **paired_tests(per_user)}
    out["seed_mean"], out["seed_lo"], out["seed_hi"] = seed_interval(seed_means)
    return out


def compare_table(
    runs: pd.DataFrame,
    group_by: Sequence[str],
    columns: Sequence[str],
    baseline: str | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Every group against the baseline group of its dataset, on every column; Holm over
    the whole table. `baseline` names a label (default: the best mean of `columns[0]` per
    dataset). Returns (one row per group and column, {dataset: baseline group key})."""
    keys = list(group_by)
    per_data = "data" in runs.columns and "data" not in keys
    if per_data:  # a group must not mix datasets (report.mixed_groups warns of it)
        keys = [*keys, "data"]
    rows, baselines, cache = [], {}, {}
    for data, frame in runs.groupby("data", sort=False) if "data" in runs else [(None, runs)]:
        groups = dict(list(frame.groupby(keys, sort=False)))  # keys: tuples (a list groups)
        base_key = _baseline(groups, keys, columns[0], baseline, data)
        if base_key is None:
            continue
        baselines[data] = base_key
        for key, g in groups.items():
            if key == base_key:
                continue
            for col in columns:
                res = compare_groups(groups[base_key], g, col, cache)
                rows.append({**dict(zip(keys, key, strict=True)), "metric": col, **res})
    table = pd.DataFrame(rows)
    if not table.empty:
        if "wilcoxon_p" not in table:
            table["wilcoxon_p"] = np.nan
        table["holm_p"] = holm(table["wilcoxon_p"].to_numpy())
    return table, baselines


def _baseline(groups: dict, keys: list, column: str, label: str | None, data) -> tuple | None:
    if label is None:
        means = {k: g[column].mean() for k, g in groups.items() if column in g}
        means = {k: v for k, v in means.items() if pd.notna(v)}
        return max(means, key=means.get) if means else None
    if "label" not in keys:
        raise AdvrecError(f"baseline={label!r} names a label, but group_by={keys} has none")
    hits = [k for k in groups if dict(zip(keys, k, strict=True))["label"] == label]
    if not hits:
        labels = sorted({dict(zip(keys, k, strict=True))["label"] for k in groups})
        where = f" on {data}" if data is not None else ""
        raise AdvrecError(f"baseline={label!r}: no group has that label{where}; labels: {labels}")
    if len(hits) > 1:
        raise AdvrecError(f"baseline={label!r} names {len(hits)} groups ({hits}); narrow group_by")
    return hits[0]
