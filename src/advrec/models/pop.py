"""Popularity baselines: TopPop (one ranking for everyone) and GroupPop (popularity among
users with the same features, the cold-start baseline)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch

from advrec.data.batches import FitData
from advrec.errors import AdvrecError
from advrec.models.base import ClosedForm


class TopPop(ClosedForm):
    """Items ranked by their number of training interactions."""

    def __init__(self, n_users: int, n_items: int, **kw):
        super().__init__(n_users, n_items, **kw)
        self.save_hyperparameters()
        self.register_buffer("popularity", torch.zeros(n_items))

    def fit_matrix(self, matrix: sp.csr_matrix) -> None:
        counts = np.bincount(matrix.indices, minlength=self.n_items).astype(np.float32)
        self.popularity = torch.from_numpy(counts).to(self.device)

    def score(self, users: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        return self.popularity.expand(len(users), -1)


class GroupPop(ClosedForm):
    """Popularity among training users who share the user's features.

    `levels` go from fine to coarse (default gender x age bucket x occupation, then gender x
    age bucket, then gender); a user is served by the first level whose group has at least
    `min_users` training users, else by global popularity. Groups are read from the encoded
    features (one-hot blocks), so users never seen in training - cold start, or a new user's
    features row in advrec-recommend - are scored the same way. Ties break by global
    popularity.
    """

    uses_features = True
    data_facts = ("feature_blocks",)

    def __init__(
        self,
        n_users: int,
        n_items: int,
        levels: Sequence[Sequence[str]] = (
            ("gender", "age", "occupation"),
            ("gender", "age"),
            ("gender",),
        ),
        min_users: int = 20,
        feature_blocks: dict | None = None,
        **kw,
    ):
        super().__init__(n_users, n_items, **kw)
        self.save_hyperparameters()
        blocks = {c: tuple(b) for c, b in (feature_blocks or {}).items()}
        if not blocks:
            raise AdvrecError(
                "GroupPop needs user features and the data has none configured: set "
                "data.features.categorical / numeric (and data.features.path for a CSV)"
            )
        self.levels = [list(level) for level in levels if list(level)] + [[]]
        for col in {c for level in self.levels for c in level}:
            if col not in blocks:
                raise AdvrecError(
                    f"model.levels names {col!r}, not an encoded feature column; "
                    f"encoded columns: {list(blocks)}"
                )
            if blocks[col][1] - blocks[col][0] == 1:
                raise AdvrecError(
                    f"GroupPop groups by {col!r}, a standardised numeric column; bucket it "
                    f"(data.features.buckets.{col}=[edges]) or make it categorical"
                )
        self.blocks = blocks
        self._features: torch.Tensor | None = None
        self._state: dict[str, list[torch.Tensor]] = {}

    def _codes(self, features: torch.Tensor, level: list[str]) -> torch.Tensor:
        """One integer per user for its group at `level` (an all-zero block is its own value)."""
        code = torch.zeros(len(features), dtype=torch.int64, device=features.device)
        for col in level:
            lo, hi = self.blocks[col]
            block = features[:, lo:hi]
            value = torch.where(block.sum(1) > 0, block.argmax(1), hi - lo)
            code = code * (hi - lo + 1) + value
        return code

    def take_data(self, data: FitData) -> None:
        self._features = data.user_features.cpu()

    def fit_matrix(self, matrix: sp.csr_matrix) -> None:
        users = np.flatnonzero(np.diff(matrix.indptr) > 0)
        features, rows = self._features[users], matrix[users]
        overall = np.bincount(matrix.indices, minlength=self.n_items).astype(np.float32)
        tiebreak = overall / (overall.max() + 1.0)  # < 1: orders items within equal counts
        state: dict[str, list[torch.Tensor]] = {"keys": [], "counts": [], "tables": []}
        for level in self.levels:
            keys, group, counts = np.unique(
                self._codes(features, level).numpy(), return_inverse=True, return_counts=True
            )
            member = sp.csr_matrix(
                (np.ones(len(users), np.float32), (group, np.arange(len(users)))),
                shape=(len(keys), len(users)),
            )
            table = (member @ rows).toarray().astype(np.float32) + tiebreak
            for name, value in zip(state, (keys, counts, table), strict=True):
                state[name].append(torch.from_numpy(value).to(self.device))
        self._state = state

    def score_batch(self, batch: dict) -> torch.Tensor:
        if not self._state:
            raise RuntimeError("GroupPop is not fitted")
        f = batch["features"]
        if self._state["keys"][0].device != f.device:  # loaded on the CPU, scoring elsewhere
            self._state = {k: [t.to(f.device) for t in v] for k, v in self._state.items()}
        out = torch.empty(len(f), self.n_items, device=f.device)
        todo = torch.ones(len(f), dtype=torch.bool, device=f.device)
        last = len(self.levels) - 1
        for i, level in enumerate(self.levels):
            keys, counts = self._state["keys"][i], self._state["counts"][i]
            code = self._codes(f, level)
            pos = torch.searchsorted(keys, code).clamp(max=len(keys) - 1)
            ok = todo & (keys[pos] == code)
            if i < last:
                ok &= counts[pos] >= self.hparams.min_users
            out[ok] = self._state["tables"][i][pos[ok]]
            todo &= ~ok
        return out

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["group_popularity"] = self._state

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self._state = checkpoint.get("group_popularity", {})
