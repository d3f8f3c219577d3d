"""ItemKNN: cosine item-item similarity with shrinkage, top-k neighbours per item."""

from __future__ import annotations

import scipy.sparse as sp
import torch

from advrec.models.base import ClosedForm
from advrec.models.similarity import COSINE_LIMITS, cosine_neighbours


class ItemKNN(ClosedForm):
    """sim(i, j) = <x_i, x_j> / (|x_i| |x_j| + shrink); each item keeps its `topk` most
    similar items; score(u, j) = sum over the user's items i of sim(i, j)."""

    reads_history = True

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
        k = self._k()
        self.register_buffer("nbr_idx", torch.zeros(n_items, k, dtype=torch.long))
        self.register_buffer("nbr_val", torch.zeros(n_items, k))
        self._sim_t: torch.Tensor | None = None

    def _k(self) -> int:
        return max(1, min(int(self.hparams.topk), self.n_items - 1))

    def fit_matrix(self, matrix: sp.csr_matrix) -> None:
        h = self.hparams
        idx, val = cosine_neighbours(matrix.tocsc(), self._k(), h.shrink, h.block_size)
        self.nbr_idx, self.nbr_val = idx.to(self.device), val.to(self.device)
        self._sim_t = None

    def _similarity_t(self) -> torch.Tensor:
        """Sparse S^T (target item x neighbour) built once from the neighbour buffers."""
        if self._sim_t is None or self._sim_t.device != self.nbr_idx.device:
            n, k = self.nbr_idx.shape
            rows = torch.arange(n, device=self.nbr_idx.device).repeat_interleave(k)
            ind = torch.stack([rows, self.nbr_idx.flatten()])
            self._sim_t = torch.sparse_coo_tensor(ind, self.nbr_val.flatten(), (n, n)).coalesce()
        return self._sim_t

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self._sim_t = None

    def score(self, users: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        return torch.sparse.mm(self._similarity_t(), history.T).T
