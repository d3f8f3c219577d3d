"""EASE^R (Steck, WWW 2019): a closed-form item-item model, B = I - P diagMat(1/diag(P))."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from advrec.errors import AdvrecError
from advrec.models.base import ClosedForm


class EASESolver:
    """EASE^R's B for one training matrix X (users x items) at any lam, reusing the work that
    does not depend on lam (a grid search solves many).

    P = (X^T X + lam I)^-1 is needed only up to scale. With fewer users than items (Last.fm:
    1,892 x 17,632) it comes from the user-user kernel by Woodbury,
    lam P = I - X^T (X X^T + lam I)^-1 X, which costs O(users^2 items + nnz items) instead of
    the O(items^3) of inverting the item Gram matrix; `dual` forces either route."""

    def __init__(self, matrix: sp.spmatrix, device=None, dual: bool | None = None):
        m = sp.csr_matrix(matrix, dtype=np.float64)
        m = m[m.getnnz(axis=1) > 0]  # an empty row adds nothing to either Gram matrix
        self.device = device
        self.dual = m.shape[0] < m.shape[1] if dual is None else dual
        if self.dual:
            self.x = m
            self.gram = torch.from_numpy((m @ m.T).toarray()).to(device)  # users x users
        else:
            self.gram = torch.from_numpy((m.T @ m).toarray()).to(device)  # items x items

    def __call__(self, lam: float) -> torch.Tensor:
        """B (float32, zero diagonal): the minimiser of ||X - X B||^2 + lam ||B||^2."""
        g = self.gram.clone()
        g.diagonal().add_(float(lam))
        try:
            inv = torch.cholesky_inverse(torch.linalg.cholesky(g))
        except torch.linalg.LinAlgError:
            raise AdvrecError(
                f"model.lam={lam}: X^T X + lam I is not positive definite; raise model.lam"
            ) from None
        if self.dual:  # lam P = I - X^T K X; the sparse product keeps it O(nnz items)
            kx = np.ascontiguousarray((self.x.T @ inv.cpu().numpy()).T)  # K X, dense
            p = torch.from_numpy(np.asarray(self.x.T @ kx)).to(self.device).neg_()
            p.diagonal().add_(1.0)
        else:
            p = inv
        d = p.diagonal().clone()
        b = p.div_(d.neg_())  # in place: at 17k items P alone is 2.5 GB
        b.diagonal().zero_()
        return b.float()


class EASE(ClosedForm):
    """`lam` is the L2 weight; scores are history @ B with a zero diagonal."""

    reads_history = True

    limits = {"lam": ("a number > 0 (the L2 weight)", lambda v: v > 0)}

    def __init__(self, n_users: int, n_items: int, lam: float = 500.0, **kw):
        super().__init__(n_users, n_items, **kw)
        self.save_hyperparameters()
        self.check_limits()
        self.register_buffer("B", torch.zeros(n_items, n_items))
        self._solver: tuple | None = None

    def fit_matrix(self, matrix: sp.csr_matrix) -> None:
        key = (id(matrix), matrix.nnz)  # a grid fits one matrix many times
        if self._solver is None or self._solver[0] != key:
            self._solver = (key, EASESolver(matrix, self.device))
        self.B = self._solver[1](self.hparams.lam)

    def on_fit_end(self) -> None:
        self._solver = None

    def score(self, users: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        return history @ self.B
