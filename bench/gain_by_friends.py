"""Per-user results by friend count: how much of the friends' signal each cold-start model uses.

Reads finished runs (metrics.json + per_user_test.parquet, as advrec-train writes them) on a
split with a user set, rebuilds each run's split from its saved config, and bins the test users
by how many of their friends have a known history at test time (training + validation: what
the social models can read). Prints JSON: per model label and bin, the users, the mean of the
metric and, paired by user with the `--baseline` label's runs on the same test users, the mean
gain; and the Spearman correlation of that gain with the friend count.

    python bench/gain_by_friends.py 'multirun/benchmark_lastfm_coldstart_heater/*' \
        --baseline TopPop --metric ndcg@20
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

EDGES = (0, 1, 2, 4, 8, 16)  # bins [0], [1], [2, 3], [4, 7], [8, 15], [16, inf)


def bin_names(edges: tuple[int, ...] = EDGES) -> list[str]:
    """'0', '1', '2-3', ..., '16+' for the bins starting at `edges`."""
    names = []
    for lo, hi in zip(edges, (*edges[1:], None), strict=True):
        names.append(f"{lo}+" if hi is None else (f"{lo}" if hi == lo + 1 else f"{lo}-{hi - 1}"))
    return names


def friends_with_history(friends, known) -> np.ndarray:
    """For each user, how many of their friends (rows of the 0/1 `friends` matrix) have at
    least one item in `known` (users x items)."""
    has = (np.diff(known.indptr) > 0).astype(np.int64)
    return np.asarray(friends @ has).ravel()


def test_users_friends(run: Path, set_name: str) -> pd.DataFrame:
    """Raw user id -> friends, friends with a known history at test time, for `run`'s split."""
    from omegaconf import OmegaConf

    import advrec.config  # noqa: F401  (registers advrec's resolvers)
    from advrec.errors import AdvrecError
    from advrec.run.build import build_datamodule

    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    dm = build_datamodule(cfg)
    if set_name not in dm.user_sets:
        raise AdvrecError(f"{run}: the data has no user set {set_name!r} ({list(dm.user_sets)})")
    m = dm.user_sets[set_name].tocsr()
    return pd.DataFrame(
        {
            "user": [str(u) for u in dm.data.user_ids],
            "friends": np.diff(m.indptr),
            "known_friends": friends_with_history(m, dm.history("test")),
        }
    )


def load(patterns: list[str], set_name: str) -> pd.DataFrame:
    """One row per (run, test user): label, test fingerprint, friend counts, every metric."""
    from advrec.report import find_runs

    rows, splits = [], {}
    for mpath in find_runs(patterns):
        run = mpath.parent
        meta = json.loads(mpath.read_text())
        per_user = run / "per_user_test.parquet"
        if not per_user.exists():
            print(f"skipped {run}: no per_user_test.parquet", file=sys.stderr)
            continue
        key = meta["dataset"]["test_fingerprint"]
        if key not in splits:
            splits[key] = test_users_friends(run, set_name)
        df = pd.read_parquet(per_user).assign(user=lambda d: d["user"].astype(str))
        df = df.merge(splits[key], on="user", how="left", validate="one_to_one")
        rows.append(df.assign(label=meta["label"], split=key, seed=meta["seed"]))
    if not rows:
        raise SystemExit("no run with per-user results matched " + " ".join(patterns))
    return pd.concat(rows, ignore_index=True)


def summarise(users: pd.DataFrame, metric: str, baseline: str | None) -> dict:
    """Per label: users and mean `metric` per friend-count bin, the paired gain over
    `baseline` (same split, same user) and its Spearman correlation with the friend count."""
    names = bin_names()
    users = users.assign(bin=pd.cut(users["known_friends"], [*EDGES, np.inf], right=False,
                                    labels=names))  # fmt: skip
    base = None
    if baseline is not None:
        base = users[users["label"] == baseline][["split", "seed", "user", metric]]
        if base.empty:
            raise SystemExit(f"--baseline {baseline!r}: no run has that label")
        # one baseline value per (split, user): a deterministic baseline's seeds agree
        base = base.groupby(["split", "user"])[metric].mean().rename("base").reset_index()
    out = {}
    for label, g in users.groupby("label", sort=False):
        if base is not None:
            g = g.merge(base, on=["split", "user"], how="left")
            g["gain"] = g[metric] - g["base"]
        by_bin = []
        for name, b in g.groupby("bin", observed=False):
            cell = {"bin": str(name), "users": int(len(b)), "mean": _num(b[metric].mean())}
            if base is not None:
                cell["gain"] = _num(b["gain"].mean())
            by_bin.append(cell)
        entry = {"runs": int(g[["split", "seed"]].drop_duplicates().shape[0]),
                 "mean": _num(g[metric].mean()), "by_bin": by_bin}  # fmt: skip
        if base is not None and label != baseline and g["gain"].notna().sum() > 2:
            entry["spearman_gain_vs_known_friends"] = _num(
                g["gain"].corr(g["known_friends"], method="spearman")
            )
        out[label] = entry
    return out


def _num(x: float) -> float | None:
    return None if pd.isna(x) else round(float(x), 4)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run folders or globs (as advrec-report's runs=)")
    p.add_argument("--set", default="friends", help="the user set (data.features.sets.<name>)")
    p.add_argument("--metric", default="ndcg@20")
    p.add_argument("--baseline", default=None, help="label the gains are measured against")
    a = p.parse_args(argv)
    users = load(a.runs, a.set)
    if a.metric not in users.columns:
        raise SystemExit(f"--metric {a.metric!r}: the per-user files hold {list(users.columns)}")
    result = {
        "metric": a.metric,
        "set": a.set,
        "binned_by": "friends with a known history at test time",
        "users_without_any_friend": int(
            (users.drop_duplicates(["split", "user"])["friends"] == 0).sum()
        ),
        "models": summarise(users, a.metric, a.baseline),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
