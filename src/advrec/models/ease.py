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
    the O(items^3) of inverting the item Gram matrix, and B is written a block of columns at a
    time (float64 products, `block_bytes` each) into one float32 matrix: the only n x n buffer
    is the result (at 17k items the whole float64 P was 2.5 GB more). `dual` forces either
    route."""

    def __init__(
        self,
        matrix: sp.spmatrix,
        device=None,
        dual: bool | None = None,
        block_bytes: int = 256 * 2**20,
    ):
        m = sp.csr_matrix(matrix, dtype=np.float64)
        m = m[m.getnnz(axis=1) > 0]  # an empty row adds nothing to either Gram matrix
        self.device = device
        self.block_bytes = block_bytes
        self.dual = m.shape[0] < m.shape[1] if dual is None else dual
        if self.dual:
            self.xt = m.T.tocsr()  # items x users
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
        if self.dual:
            return self._dual(inv.cpu().numpy())
        d = inv.diagonal().clone()
        b = inv.div_(d.neg_())  # in place: B = -P / diag(P), column by column
        b.diagonal().zero_()
        return b.float()

    def _dual(self, kernel: np.ndarray) -> torch.Tensor:
        """B from lam P = I - X^T K X, K = (X X^T + lam I)^-1: B[:, j] = -P[:, j] / P[j, j]."""
        n = self.xt.shape[0]
        kx = np.asfortranarray((self.xt @ kernel).T)  # K X (users x items), columns contiguous
        b = torch.empty(n, n, dtype=torch.float32, device=self.device)
        step = max(1, self.block_bytes // (8 * n))
        for start in range(0, n, step):
            cols = slice(start, min(start + step, n))
            p = np.asarray(self.xt @ kx[:, cols])  # X^T K X, one block of columns
            p = np.negative(p, out=p)
            j = np.arange(cols.start, cols.stop)
            p[j, j - start] += 1.0
            p /= -p[j, j - start]
            p[j, j - start] = 0.0
            b[:, cols] = torch.from_numpy(p)
        return b


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
