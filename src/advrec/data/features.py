"""User features -> a numeric matrix, with encoders fitted on training users only.

Categorical columns become one-hot blocks (a category never seen among training users
encodes as all zeros); numeric columns are standardised with the training users' mean and
std, or one-hot bucketed at given edges. Fitting on training users only keeps held-out
(cold-start) users from leaking into the encoding.

`join_user_features` attaches a CSV/Parquet keyed by user id to any source's users.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from advrec.errors import AdvrecError


def join_user_features(user_ids: np.ndarray, path: str | Path, id_column: str) -> pd.DataFrame:
    """The rows of the feature file at `path`, one per raw id in `user_ids` (in that order).

    Raises a clear error when the id column is missing or when some users have no row.
    """
    from advrec.data.sources import read_table  # sources import this module's users

    table = read_table(path)
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
