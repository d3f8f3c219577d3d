"""LoCo (Sedhain, Menon, Sanner, Xie & Braziunas, AAAI 2017): low-rank linear cold-start
recommendation from social (or any) user features.

A linear map W from a user's features f (here: the multi-hot of their friends) to their
preferences, learnt on the users with training interactions by reduced-rank ridge regression:
min_W ||R - F W||^2 + reg ||W||^2 with rank(W) <= rank. With F's rank-`rank` SVD
F ~ U S V^T (randomised: torch.svd_lowrank, as the paper uses randomised SVD to scale),
W = V diag(s / (s^2 + reg)) U^T R. A new user is scored by f W without any training for them.
Departure from the paper: the features are whatever block `feature_block` names (the paper's
social features are the user's friends, as here), and `reg` is a ridge term (the paper's
closed form is its reg = 0 limit).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch

from advrec.models.base import ClosedForm
from advrec.models.social import set_block, tiebreak_popularity


class LoCo(ClosedForm):
    """Reduced-rank regression from a user set's multi-hot to the user's items."""

    uses_features = True
    data_facts = ("feature_blocks",)
    limits = {
        "rank": ("an integer >= 1", lambda v: v >= 1 and v == int(v)),
        "reg": ("a number >= 0", lambda v: v >= 0),
    }

    def __init__(
        self,
        n_users: int,
        n_items: int,
        rank: int = 100,
        reg: float = 1.0,
        feature_blocks: dict | None = None,
        feature_block: str = "friends",
        seed: int = 0,
        ks: Sequence[int] = (5, 10, 20),
        search: dict | None = None,
        select_by: str | None = "val/ndcg@10",
    ):
        super().__init__(n_users, n_items, ks, search, select_by)
        self.save_hyperparameters()
        self.check_limits()
        self.block = lo, hi = set_block(feature_blocks, feature_block, "LoCo")
        self.register_buffer("project", torch.zeros(hi - lo, rank))  # V
        self.register_buffer("decode", torch.zeros(rank, n_items))  # diag(...) U^T R
        self.register_buffer("popularity", torch.zeros(n_items))
        self._features: torch.Tensor | None = None

    def take_data(self, data) -> None:
        self._features = data.user_features.cpu()

    def fit_matrix(self, matrix: sp.csr_matrix) -> None:
        h = self.hparams
        lo, hi = self.block
        users = np.flatnonzero(np.diff(matrix.indptr) > 0)  # the users with interactions
        f = self._features[torch.from_numpy(users), lo:hi].float()
        r = matrix[users].tocsr().astype(np.float32)
        r.data[:] = 1.0
        q = min(int(h.rank), min(f.shape))
        with torch.random.fork_rng():  # svd_lowrank draws from the global generator
            torch.manual_seed(int(h.seed))
            u, s, v = torch.svd_lowrank(f, q=q, niter=4)
        s = torch.where(s > 1e-6 * s.max(), s, torch.zeros_like(s))  # numerically null: off
        ut_r = torch.from_numpy(np.asarray((r.T @ u.numpy()).T))  # U^T R, (q, items)
        shrink = torch.where(s > 0, s / (s.pow(2) + float(h.reg)).clamp(min=1e-30), 0.0)
        rank = int(h.rank)  # a grid changes it between fits: the state follows
        self.project = torch.zeros(hi - lo, rank, device=self.device)  # columns past q stay 0
        self.decode = torch.zeros(rank, self.n_items, device=self.device)
        self.project[:, :q] = v.to(self.device)
        self.decode[:q] = (shrink[:, None] * ut_r).to(self.device)
        self.popularity = tiebreak_popularity(matrix, self.n_items).to(self.device)

    def score_batch(self, batch: dict) -> torch.Tensor:
        lo, hi = self.block
        f = batch["features"][:, lo:hi].float()
        scores = (f @ self.project) @ self.decode
        empty = (f.sum(1, keepdim=True) == 0).expand_as(scores)  # no friends: TopPop
        return torch.where(empty, self.popularity.expand_as(scores), scores)
