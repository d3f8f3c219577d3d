"""Per-user results: `per_user_<split>.parquet` beside a run's metrics.json (no torch here: the
report reads these files).

One row per evaluated user (users with at least one held-out item, the ones the means run
over), sorted by the model's user index: `user` (raw ids as the data file has them),
`n_targets` (their held-out items), and one float32 array per metric, e.g. `ndcg@20`. The mean
of each column is the metric in metrics.json (to float32 rounding). ML-20M's shape (138,493
users, 6 metrics at 3 cut-offs) took 16.1 MB with incompressible random values; real ones
(many 0s, 1s and multiples of 1/K) take less.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from advrec.errors import AdvrecError
from advrec.metrics.names import PER_USER
from advrec.utils.io import write_bytes

SPLITS = ("test", "val")


def splits_of(value) -> tuple[str, ...]:
    """The `per_user` setting as split names; anything else is one line naming the choices."""
    names = [value] if isinstance(value, str) else list(value or [])
    bad = [n for n in names if n not in SPLITS]
    if bad:
        raise AdvrecError(
            f"per_user={value}: {bad[0]!r} is not a split; list any of {list(SPLITS)}, "
            "e.g. per_user=[test,val], or per_user=[] for none"
        )
    return tuple(dict.fromkeys(names))


def file_name(split: str) -> str:
    return f"per_user_{split}.parquet"


def as_frame(table: dict, user_ids, ks) -> pd.DataFrame:
    """RankingMetrics' `per_user_values` (tensors or arrays) -> one row per user, raw ids."""
    users = np.asarray(table["users"])
    values = np.asarray(table["values"], dtype=np.float32)
    raw = np.asarray(user_ids)[users] if len(users) else np.asarray([], dtype=np.int64)
    frame = {"user": raw, "n_targets": np.asarray(table["n_targets"], dtype=np.int32)}
    for i, name in enumerate(PER_USER):
        for j, k in enumerate(ks):
            frame[f"{name}@{k}"] = values[:, i, j]
    return pd.DataFrame(frame)


def write_per_user(path: Path | str, frame: pd.DataFrame) -> Path:
    """The frame as Parquet, written atomically."""
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return write_bytes(path, lambda f: f.write(buf.getvalue()))


def write_files(out_dir: Path, tables: dict, splits, user_ids, ks) -> None:
    """per_user_<split>.parquet in `out_dir` for each split asked for that was evaluated (written
    before metrics.json: a run that has metrics.json has its per-user files)."""
    for split in splits_of(splits):
        if tables.get(split) is not None:
            write_per_user(Path(out_dir) / file_name(split), as_frame(tables[split], user_ids, ks))


def read_per_user(path: Path | str) -> pd.DataFrame:
    """A per_user_<split>.parquet as a DataFrame (columns in the written order)."""
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as e:
        raise AdvrecError(f"{path} is not a readable per-user file ({e}); rerun its run") from None
    if "user" not in frame:
        raise AdvrecError(f"{path} has no 'user' column: not an advrec per-user file")
    return frame
