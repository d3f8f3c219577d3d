"""`Interactions`: a users x items CSR matrix that keeps the raw ids end to end."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from advrec.errors import AdvrecError

DUPLICATE_POLICIES = ("first", "last", "max", "sum", "error")
_CANONICAL_INT = re.compile(r"0|-?[1-9][0-9]*")
_INT64 = (-(2**63), 2**63 - 1)


def raw_ids(values: pd.Series) -> pd.Series:
    """Ids exactly as the file spells them: int64 when every id is an integer written in its
    one canonical form that int64 holds (so `str(id)` gives back the same bytes), text
    otherwise. `05` and `5`, `1e3`, `2^63`, `2^64 - 1` or `ü7` stay text; an unsigned column
    beyond int64 (Parquet) becomes text instead of wrapping around to negative numbers."""
    if pd.api.types.is_unsigned_integer_dtype(values.dtype):
        if len(values) and int(values.max()) > _INT64[1]:
            return values.astype(str)
        return values.astype(np.int64)
    if not (pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values)):
        return values  # integers, floats, ... as the reader typed them
    text = values.astype(str)
    if not text.str.fullmatch(_CANONICAL_INT).all():
        return text
    as_int = [int(v) for v in text]  # exact, however long
    if min(as_int) < _INT64[0] or max(as_int) > _INT64[1]:
        return text
    return pd.Series(np.asarray(as_int, dtype=np.int64), index=values.index, name=values.name)


TRAIN, VAL, TEST = 0, 1, 2  # values of `Interactions.folds` (predefined splits) and of splits
# few-shot cold start: a cold validation / test user's revealed interactions (their history
# when they are scored, never trained on while they are held out)
SHOWN_VAL, SHOWN_TEST = 3, 4


@dataclass
class Interactions:
    """Implicit feedback as a binary CSR matrix (users x items, float32).

    `user_ids` / `item_ids` map row / column positions back to raw ids (strings or ints).
    `timestamps` and `folds` (predefined splits: 0 train, 1 validation, 2 test), when present,
    are aligned with `matrix.data` (canonical CSR order). `user_features` is indexed by row.
    """

    matrix: sp.csr_matrix
    user_ids: np.ndarray
    item_ids: np.ndarray
    timestamps: np.ndarray | None = None
    folds: np.ndarray | None = None
    user_features: pd.DataFrame | None = None
    stats: dict = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return self.matrix.shape[0]

    @property
    def n_items(self) -> int:
        return self.matrix.shape[1]

    @property
    def nnz(self) -> int:
        return int(self.matrix.nnz)

    def coo(self) -> tuple[np.ndarray, np.ndarray]:
        """(row, col) of every interaction in canonical CSR order."""
        rows = np.repeat(np.arange(self.n_users), np.diff(self.matrix.indptr))
        return rows, self.matrix.indices.astype(np.int64)

    def fingerprint(self) -> str:
        """A hash of everything a split depends on (structure, ids, timestamps, folds)."""
        if self.__dict__.get("_fingerprint"):
            return self.__dict__["_fingerprint"]
        h = hashlib.sha256()
        m = self.matrix
        for arr in (m.indptr, m.indices, self.timestamps, self.folds):
            if arr is not None:
                h.update(np.ascontiguousarray(arr).tobytes())
        h.update(str(m.shape).encode())
        for ids in (self.user_ids, self.item_ids):
            h.update("\x1f".join(map(str, ids)).encode())
        self.__dict__["_fingerprint"] = h.hexdigest()[:16]  # the data never changes after load
        return self.__dict__["_fingerprint"]

    def describe(self) -> dict:
        n_u, n_i = self.matrix.shape
        return {
            "n_users": int(n_u),
            "n_items": int(n_i),
            "n_interactions": self.nnz,
            "density": float(self.nnz / max(n_u * n_i, 1)),
            **self.stats,
        }

    @classmethod
    def from_frame(
        cls,
        df: pd.DataFrame,
        user_col: str = "user",
        item_col: str = "item",
        rating_col: str | None = None,
        time_col: str | None = None,
        fold_col: str | None = None,
        threshold: float | None = None,
        duplicates: str = "first",
        kcore: int = 0,
        keep_filtered_ids: bool = False,
        source: str = "data",
    ) -> Interactions:
        """Build from a long table, validating columns and values with clear errors.

        Ratings below `threshold` are dropped (None keeps every rating as a positive);
        duplicate (user, item) pairs follow `duplicates` and are counted in `stats`;
        `kcore` > 0 keeps users and items with at least `kcore` interactions.
        `keep_filtered_ids` keeps users/items whose rows the threshold removed in the id space
        (a catalogue of every item, as IRGAN's released evaluation ranks).
        """
        if duplicates not in DUPLICATE_POLICIES:
            raise AdvrecError(
                f"unknown duplicate policy {duplicates!r}; choose one of {DUPLICATE_POLICIES}"
            )
        wanted = [c for c in (user_col, item_col, rating_col, time_col, fold_col) if c]
        missing = [c for c in wanted if c not in df.columns]
        if missing:
            raise AdvrecError(
                f"{source}: column(s) {missing} not found; columns present: {list(df.columns)}. "
                "Set the column names in the data config (e.g. data.source.columns.user=...)."
            )
        if threshold is not None and rating_col is None:
            raise AdvrecError(
                f"{source}: threshold={threshold} keeps ratings >= it, but no rating column is "
                "mapped; set data.source.columns.rating=<column> or data.source.threshold=null"
            )
        if df.empty:
            raise AdvrecError(
                f"{source}: the file has no data rows (columns {list(df.columns)} only); "
                "give a file with interactions"
            )
        df = df[wanted].copy()
        stats: dict = {"n_raw_rows": int(len(df))}
        for col in (user_col, item_col):
            if df[col].isna().any():
                bad = int(df[col].isna().sum())
                raise AdvrecError(f"{source}: {bad} row(s) have an empty {col!r}; fix the file.")
            df[col] = raw_ids(df[col])
        for col in (rating_col, time_col):
            if col is None:
                continue
            vals = pd.to_numeric(df[col], errors="coerce")
            bad = vals.isna()
            if bad.any():
                first = df.loc[bad, col].head(3).tolist()
                raise AdvrecError(
                    f"{source}: column {col!r} has {int(bad.sum())} non-numeric or NaN value(s) "
                    f"(first: {first}); clean the file or map a different column."
                )
            df[col] = vals
        all_users, all_items = df[user_col].unique(), df[item_col].unique()
        if rating_col is not None and threshold is not None:
            df = df[df[rating_col] >= threshold]
            stats["n_below_threshold"] = stats["n_raw_rows"] - int(len(df))
        df, n_dup = _dedupe(df, user_col, item_col, rating_col, time_col, duplicates, source)
        stats["n_duplicates"] = n_dup
        if kcore > 0:
            df = _kcore(df, user_col, item_col, kcore)
        if df.empty:
            raise AdvrecError(
                f"{source}: no interactions left after filtering (threshold={threshold}, "
                f"kcore={kcore}); lower the threshold or the k-core."
            )
        if keep_filtered_ids and kcore == 0:
            u_ids, i_ids = np.sort(all_users), np.sort(all_items)
            u_codes = pd.Index(u_ids).get_indexer(df[user_col])
            i_codes = pd.Index(i_ids).get_indexer(df[item_col])
        else:
            u_codes, u_ids = pd.factorize(df[user_col], sort=True)
            i_codes, i_ids = pd.factorize(df[item_col], sort=True)
        return cls.from_codes(
            u_codes,
            i_codes,
            np.asarray(u_ids),
            np.asarray(i_ids),
            timestamps=df[time_col].to_numpy() if time_col else None,
            folds=df[fold_col].to_numpy() if fold_col else None,
            stats=stats,
        )

    @classmethod
    def from_codes(
        cls,
        rows: np.ndarray,
        cols: np.ndarray,
        user_ids: np.ndarray,
        item_ids: np.ndarray,
        timestamps: np.ndarray | None = None,
        folds: np.ndarray | None = None,
        stats: dict | None = None,
    ) -> Interactions:
        """Build from unique (row, col) codes; side arrays are reordered to CSR order."""
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        order = np.lexsort((cols, rows))
        shape = (len(user_ids), len(item_ids))
        matrix = sp.csr_matrix(
            (np.ones(len(rows), dtype=np.float32), (rows[order], cols[order])), shape=shape
        )
        if matrix.nnz != len(rows):
            raise ValueError("from_codes needs unique (row, col) pairs")
        return cls(
            matrix=matrix,
            user_ids=np.asarray(user_ids),
            item_ids=np.asarray(item_ids),
            timestamps=None if timestamps is None else np.asarray(timestamps)[order],
            folds=None if folds is None else np.asarray(folds, dtype=np.int8)[order],
            stats=dict(stats or {}),
        )


def _dedupe(df, user_col, item_col, rating_col, time_col, policy, source):
    dup = df.duplicated([user_col, item_col], keep="first")
    n_dup = int(dup.sum())
    if n_dup == 0:
        return df, 0
    if policy == "error":
        ex = df.loc[dup, [user_col, item_col]].head(3).values.tolist()
        raise AdvrecError(
            f"{source}: {n_dup} duplicate (user, item) pair(s), e.g. {ex}; "
            "set data.source.duplicates to first, last, max or sum to merge them."
        )
    if policy in ("first", "last"):
        return df.drop_duplicates([user_col, item_col], keep=policy), n_dup
    agg = {c: ("max" if policy == "max" or c == time_col else "sum") for c in df.columns}
    for key in (user_col, item_col):
        agg.pop(key)
    if not agg:
        return df.drop_duplicates([user_col, item_col]), n_dup
    out = df.groupby([user_col, item_col], as_index=False, sort=False).agg(agg)
    return out, n_dup


def _kcore(df: pd.DataFrame, user_col: str, item_col: str, k: int) -> pd.DataFrame:
    while True:
        u_ok = df.groupby(user_col)[item_col].transform("size") >= k
        i_ok = df.groupby(item_col)[user_col].transform("size") >= k
        keep = u_ok & i_ok
        if keep.all():
            return df
        df = df[keep]
