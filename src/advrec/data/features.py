"""User features -> a numeric matrix, with encoders fitted on training users only.

Categorical columns become one-hot blocks (a category never seen among training users
encodes as all zeros); numeric columns are standardised with the training users' mean and
std, or one-hot bucketed at given edges. Fitting on training users only keeps held-out
(cold-start) users from leaking into the encoding.

`join_user_features` attaches a CSV/Parquet keyed by user id to any source's users.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from advrec.errors import AdvrecError

log = logging.getLogger(__name__)


def join_user_features(user_ids: np.ndarray, path: str | Path, id_column: str) -> pd.DataFrame:
    """The rows of the feature file at `path`, one per raw id in `user_ids` (in that order).

    Raises a clear error when the id column is missing or when some users have no row.
    """
    from advrec.data.sources import read_table  # sources import this module's users

    table = read_table(path, dtype={id_column: str})  # ids as written (`05` stays `05`)
    if id_column not in table.columns:
        raise AdvrecError(
            f"{path}: no {id_column!r} column to join users on; columns present: "
            f"{list(table.columns)}. Set data.features.id_column."
        )
    ids = table[id_column].astype(str)
    if ids.duplicated().any():
        raise AdvrecError(f"{path}: user id(s) {ids[ids.duplicated()].head(3).tolist()} repeat")
    wanted = pd.Index([str(u) for u in user_ids])
    missing = wanted.difference(pd.Index(ids))
    if len(missing):
        raise AdvrecError(
            f"{path}: {len(missing)} user(s) of the interactions have no feature row, e.g. "
            f"{sorted(missing)[:5]}. Add them to the feature file (or filter them out)."
        )
    return table.set_index(ids).reindex(wanted).drop(columns=id_column).reset_index(drop=True)


@dataclass
class FeatureEncoder:
    categorical: list[str] = field(default_factory=list)
    numeric: list[str] = field(default_factory=list)
    buckets: dict[str, list[float]] = field(default_factory=dict)  # numeric col -> edges
    _categories: dict[str, list] = field(default_factory=dict, repr=False)
    _moments: dict[str, tuple[float, float]] = field(default_factory=dict, repr=False)

    def _check(self, table: pd.DataFrame) -> None:
        wanted = [*self.categorical, *self.numeric]
        unknown = [c for c in wanted if c not in table.columns]
        if unknown:
            raise AdvrecError(
                f"feature column(s) {unknown} not in the feature table; columns present: "
                f"{list(table.columns)}. Fix data.features.categorical / numeric."
            )
        missing = table[wanted].isna().all(axis=1)
        if missing.any():
            rows = list(table.index[missing][:5])
            raise AdvrecError(
                f"{int(missing.sum())} user(s) have no feature row (e.g. {rows}); every user "
                "needs one. Add them to the feature file or drop them from the interactions."
            )
        for col in self.numeric:
            if pd.to_numeric(table[col], errors="coerce").isna().any():
                raise AdvrecError(
                    f"feature column {col!r} is numeric in the config but has "
                    "non-numeric or empty values"
                )

    def fit(self, table: pd.DataFrame, train_rows: np.ndarray) -> FeatureEncoder:
        """Learn categories and moments from `table.iloc[train_rows]` only."""
        self._check(table)
        train = table.iloc[np.asarray(train_rows)]
        self._categories = {
            c: sorted(train[c].dropna().unique().tolist(), key=str) for c in self.categorical
        }
        self._moments = {}
        for c in self.numeric:
            v = pd.to_numeric(train[c]).to_numpy(float)
            self._moments[c] = (float(v.mean()), float(v.std()) or 1.0)
        return self

    @property
    def dim(self) -> int:
        return max((hi for _, hi in self.blocks.values()), default=0)

    @property
    def blocks(self) -> dict[str, tuple[int, int]]:
        """Column -> [start, stop) of its block in `transform`'s output."""
        widths = {c: len(v) for c, v in self._categories.items()}
        widths.update(
            {c: len(self.buckets[c]) + 1 if c in self.buckets else 1 for c in self.numeric}
        )
        out, lo = {}, 0
        for c, w in widths.items():
            out[c] = (lo, lo + w)
            lo += w
        return out

    def transform(self, table: pd.DataFrame) -> np.ndarray:
        """(len(table), dim) float32 features in a fixed column order."""
        self._check(table)
        blocks = []
        for c, cats in self._categories.items():
            codes = pd.Categorical(table[c], categories=cats).codes  # unseen -> -1
            block = np.zeros((len(table), len(cats)), np.float32)
            ok = codes >= 0
            block[np.flatnonzero(ok), codes[ok]] = 1.0
            blocks.append(block)
        for c in self.numeric:
            v = pd.to_numeric(table[c]).to_numpy(float)
            if c in self.buckets:
                idx = np.searchsorted(self.buckets[c], v, side="right")
                block = np.zeros((len(table), len(self.buckets[c]) + 1), np.float32)
                block[np.arange(len(table)), idx] = 1.0
            else:
                mean, std = self._moments[c]
                block = ((v - mean) / std).astype(np.float32)[:, None]
            blocks.append(block)
        return np.concatenate(blocks, axis=1) if blocks else np.zeros((len(table), 0), np.float32)


SET_FORMATS = ("edges", "npz")


@dataclass
class UserSet:
    """A set-valued user feature: each user's set of other users (friends, followees) as a
    multi-hot block over the data's users, in the data's user order.

    `format=edges`: a table of pairs (`columns.user`, `columns.other`; CSV/TSV/whitespace by
    extension, `header` as in the file); `format=npz`: a `scipy.sparse` square matrix whose row
    and column i belong to the user whose raw id is the number i (Heater's user_content.npz).
    `symmetric` adds every pair's reverse (friendship). Self-pairs are dropped (a user is not
    their own evidence); ids the data does not have are an error unless `unknown=drop`.
    A user with an empty set keeps an all-zero block: the models that read sets back off
    explicitly for them (SocialPop to TopPop, the fold-in to the user's own items).
    Sets are known for every user, cold ones included (they bring them at sign-up); they carry
    no interactions, so nothing a cold user did reaches training through them.
    """

    name: str
    path: str
    format: str = "edges"
    columns: dict = field(default_factory=lambda: {"user": "user", "other": "other"})
    header: bool = True
    sep: str | None = None
    symmetric: bool = True
    unknown: str = "error"

    def __post_init__(self) -> None:
        if self.format not in SET_FORMATS:
            raise AdvrecError(
                f"data.features.sets.{self.name}.format={self.format!r}: choose {SET_FORMATS}"
            )
        if self.unknown not in ("error", "drop"):
            raise AdvrecError(
                f"data.features.sets.{self.name}.unknown={self.unknown!r}: choose error or drop"
            )

    def read(self, user_ids: np.ndarray) -> sp.csr_matrix:
        """The (n_users x n_users) 0/1 matrix of the sets, rows and columns in `user_ids`
        order."""
        index = {str(u): i for i, u in enumerate(user_ids)}
        if self.format == "npz":
            left, right = self._npz(user_ids)
        else:
            left, right = self._edges()
        where = f"{self.path} (data.features.sets.{self.name})"
        if len(left) == 0:
            raise AdvrecError(f"{where} holds no pairs; give a file with at least one")
        a = pd.Series(left).map(index)
        b = pd.Series(right).map(index)
        unknown = a.isna() | b.isna()
        if unknown.any():
            names = sorted({*pd.Series(left)[a.isna()], *pd.Series(right)[b.isna()]}, key=str)
            if self.unknown == "error":
                raise AdvrecError(
                    f"{where} names {len(names)} user id(s) the data does not have (e.g. "
                    f"{names[:5]}); fix the file or set data.features.sets.{self.name}."
                    "unknown=drop to leave those pairs out"
                )
            log.info("%s: %d pair(s) naming %d unknown user(s) left out", where,
                     int(unknown.sum()), len(names))  # fmt: skip
        a, b = a[~unknown].to_numpy(np.int64), b[~unknown].to_numpy(np.int64)
        loops = a == b
        if loops.any():
            log.info("%s: %d self-pair(s) dropped", where, int(loops.sum()))
            a, b = a[~loops], b[~loops]
        n = len(user_ids)
        m = sp.csr_matrix((np.ones(len(a), np.float32), (a, b)), shape=(n, n))
        if self.symmetric:
            m = m + m.T
        m = m.tocsr()
        m.data[:] = 1.0
        m.sort_indices()
        empty = int((np.diff(m.indptr) == 0).sum())
        if empty:
            log.info("%s: %d of %d users have an empty set (all-zero block)", where, empty, n)
        return m

    def _edges(self) -> tuple[np.ndarray, np.ndarray]:
        from advrec.data.sources import DATA_HINT, missing_hint, read_table  # (a cycle)

        if not Path(self.path).is_file():
            hint = missing_hint(Path(self.path))
            raise AdvrecError(
                f"data file not found: {Path(self.path).resolve()} (data.features.sets."
                f"{self.name}.path={self.path}; a relative path is read from the folder advrec "
                "runs in)" + (f". {hint}" if hint != DATA_HINT else "")
            )
        table = read_table(self.path, sep=self.sep, header=self.header, dtype=str)
        if not self.header:
            table.columns = [str(c) for c in table.columns]
        cols = [self.columns.get("user"), self.columns.get("other")]
        missing = [c for c in cols if c not in table.columns]
        if missing:
            raise AdvrecError(
                f"{self.path}: column(s) {missing} not found; columns present: "
                f"{list(table.columns)}. Set data.features.sets.{self.name}.columns"
            )
        pairs = table[cols].dropna()
        if len(pairs) < len(table):
            raise AdvrecError(
                f"{self.path}: {len(table) - len(pairs)} line(s) lack a user or an other user; "
                "fix the file"
            )
        return pairs[cols[0]].to_numpy(str), pairs[cols[1]].to_numpy(str)

    def _npz(self, user_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        path = Path(self.path)
        if not path.is_file():
            raise AdvrecError(
                f"data file not found: {path.resolve()} (data.features.sets.{self.name}.path)"
            )
        try:
            m = sp.load_npz(path).tocoo()
        except (OSError, ValueError) as e:
            raise AdvrecError(f"cannot read {path} as a scipy.sparse .npz: {e}") from None
        if m.shape[0] != m.shape[1]:
            raise AdvrecError(f"{path}: a {m.shape} matrix; a user set needs a square one")
        # row i is the user whose raw id is the number i ("520" or "520.0")
        by_number = {}
        for u in user_ids:
            try:
                x = float(u)
            except (TypeError, ValueError):
                continue
            if x.is_integer():
                by_number[int(x)] = str(u)
        keep = m.data != 0
        names = np.vectorize(lambda i: by_number.get(int(i), f"#{i}"), otypes=[object])
        rows, cols = m.row[keep], m.col[keep]
        if not len(rows):
            return np.array([], str), np.array([], str)
        return names(rows).astype(str), names(cols).astype(str)


def encode_sets(
    sets: list[UserSet], matrices: dict, table: pd.DataFrame, user_ids: np.ndarray
) -> np.ndarray:
    """Multi-hot blocks of new users: the `<set name>` column of `table` lists known user ids
    separated by `;` or spaces (an empty cell: an empty set, answered with the back-off). A
    missing column is refused: an all-zero block would quietly turn every user into one
    without friends."""
    index = {str(u): i for i, u in enumerate(user_ids)}
    out = np.zeros((len(table), sum(m.shape[1] for m in matrices.values())), np.float32)
    lo = 0
    for s in sets:
        if s.name not in table.columns:
            raise AdvrecError(
                f"the new users' file has no {s.name!r} column, which the model's data encodes "
                f"(data.features.sets.{s.name}); add it: known user ids separated by ';', an "
                "empty cell for none"
            )
        for r, cell in enumerate(table[s.name].fillna("").astype(str)):
            ids = [t for t in cell.replace(";", " ").split() if t]
            unknown = [t for t in ids if t not in index]
            if unknown:
                raise AdvrecError(
                    f"column {s.name!r} of row {r + 1} names user id(s) {unknown[:5]} the "
                    "model does not know; list known users only"
                )
            out[r, [lo + index[t] for t in ids]] = 1.0
        lo += matrices[s.name].shape[1]
    return out
