"""TopPop: rank items by their number of training interactions."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from advrec.models.base import ClosedForm


class TopPop(ClosedForm):
    def __init__(self, n_users: int, n_items: int, **kw):
        super().__init__(n_users, n_items, **kw)
        self.save_hyperparameters()
        self.register_buffer("popularity", torch.zeros(n_items))

    def fit_matrix(self, matrix: sp.csr_matrix) -> None:
        counts = np.bincount(matrix.indices, minlength=self.n_items).astype(np.float32)
        self.popularity = torch.from_numpy(counts).to(self.device)

    def score(self, users: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        return self.popularity.expand(len(users), -1)
