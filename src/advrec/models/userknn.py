"""UserKNN: cosine user-user similarity with shrink, the mirror of ItemKNN (ECIR 2022's
UserKNNCF): each user v keeps its `topk` most similar users; score(u, j) = sum over the
users v whose neighbourhood holds u of sim(u, v) * x_vj."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from advrec.models.similarity import COSINE_LIMITS, SparseState, cosine_neighbours


class UserKNN(SparseState):
    limits = COSINE_LIMITS

    def __init__(
        self,
        n_users: int,
        n_items: int,
        topk: int = 100,
        shrink: float = 10.0,
        block_size: int = 2048,
        **kw,
    ):
        super().__init__(n_users, n_items, **kw)
        self.save_hyperparameters()
        self.check_limits()

    def fit_matrix(self, matrix: sp.csr_matrix) -> None:
        h = self.hparams
        k = max(1, min(int(h.topk), self.n_users - 1))
        idx, val = cosine_neighbours(matrix.T.tocsc(), k, h.shrink, h.block_size)
        # row v of (idx, val) is v's neighbourhood: W[u, v] = sim(u, v) for u in it
        cols = np.repeat(np.arange(self.n_users), k)
        w = sp.csr_matrix(
            (val.numpy().ravel(), (idx.numpy().ravel(), cols)), shape=(self.n_users,) * 2
        )
        w.eliminate_zeros()
        self.set_sparse(w=w, x=matrix)

    def score(self, users: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        w = self.sparse["w"][users.cpu().numpy()]
        scores = (w @ self.sparse["x"]).toarray()
        return torch.from_numpy(scores).to(history.device)
