"""EASE^R (Steck, WWW 2019): a closed-form item-item model, B = I - P diagMat(1/diag(P))."""

from __future__ import annotations

import scipy.sparse as sp
import torch

from advrec.models.base import ClosedForm


def ease_weights(gram: torch.Tensor, lam: float) -> torch.Tensor:
    """EASE^R's B from the item-item Gram matrix X^T X (float64): the minimiser of
    ||X - X B||^2 + lam ||B||^2 with a zero diagonal, as float32."""
    g = gram.clone()
    g.diagonal().add_(float(lam))
    p = torch.cholesky_inverse(torch.linalg.cholesky(g))
    b = p / (-p.diagonal())
    b.diagonal().zero_()
    return b.float()


class EASE(ClosedForm):
    """`lam` is the L2 weight; scores are history @ B with a zero diagonal."""

    limits = {"lam": ("a number > 0 (the L2 weight)", lambda v: v > 0)}

    def __init__(self, n_users: int, n_items: int, lam: float = 500.0, **kw):
        super().__init__(n_users, n_items, **kw)
        self.save_hyperparameters()
        self.check_limits()
        self.register_buffer("B", torch.zeros(n_items, n_items))
        self._gram_cache: tuple | None = None

    def _gram(self, matrix: sp.csr_matrix) -> torch.Tensor:
        key = (id(matrix), matrix.nnz)
        if self._gram_cache is None or self._gram_cache[0] != key:
            g = (matrix.T @ matrix).toarray()
            self._gram_cache = (key, torch.from_numpy(g).to(self.device, torch.float64))
        return self._gram_cache[1]

    def fit_matrix(self, matrix: sp.csr_matrix) -> None:
        self.B = ease_weights(self._gram(matrix), self.hparams.lam)

    def on_fit_end(self) -> None:
        self._gram_cache = None

    def score(self, users: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        return history @ self.B
