"""RP3beta (Paudel et al., TiiS 2017; as in the ECIR 2022 framework): a 3-step random walk
user -> item -> user -> item with item popularity penalised.

P_ui is the user-item matrix with rows normalised to sum 1, P_iu the same for items (binary),
both raised elementwise to `alpha`; W = P_iu P_ui with column j divided by deg(j)^beta (deg:
j's training users), no self loops, each row's `topk` largest entries kept and, with
`normalize`, rows rescaled to sum 1. score(u, j) = sum_i x_ui W_ij.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from advrec.models.similarity import SparseState, topk_rows


def _row_normalised(m: sp.csr_matrix) -> sp.csr_matrix:
    sums = np.asarray(m.sum(1)).ravel()
    inv = np.divide(1.0, sums, out=np.zeros_like(sums, dtype=np.float64), where=sums > 0)
    return sp.diags(inv) @ m


class RP3beta(SparseState):
    reads_history = True

    limits = {
        "topk": ("a whole number >= 1", lambda v: v >= 1 and v == int(v)),
        "alpha": ("a number >= 0", lambda v: v >= 0),
        "beta": ("a number >= 0", lambda v: v >= 0),
    }

    def __init__(
        self,
        n_users: int,
        n_items: int,
        topk: int = 100,
        alpha: float = 1.0,
        beta: float = 0.6,
        normalize: bool = True,
        block_size: int = 1024,
        **kw,
    ):
        super().__init__(n_users, n_items, **kw)
        self.save_hyperparameters()
        self.check_limits()

    def fit_matrix(self, matrix: sp.csr_matrix) -> None:
        h = self.hparams
        binary = matrix.astype(np.float64)
        binary.data[:] = 1.0
        p_ui = _row_normalised(binary).tocsr()
        p_iu = _row_normalised(binary.T.tocsr()).tocsr()
        if h.alpha != 1.0:
            p_ui, p_iu = p_ui.power(h.alpha), p_iu.power(h.alpha)
        deg = np.asarray(binary.sum(0)).ravel()
        penalty = np.zeros_like(deg)
        penalty[deg > 0] = deg[deg > 0] ** -float(h.beta)
        blocks = []
        for lo in range(0, self.n_items, h.block_size):  # blocks of source items bound memory
            w = (p_iu[lo : lo + h.block_size] @ p_ui).toarray() * penalty[None, :]
            w[np.arange(w.shape[0]), np.arange(lo, lo + w.shape[0])] = 0.0
            blocks.append(topk_rows(w, int(h.topk)))
        w = sp.vstack(blocks).tocsr()
        if h.normalize:
            w = _row_normalised(w).tocsr()
        w.eliminate_zeros()
        self.set_sparse(w=w)

    def score(self, users: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        w_t = self.sparse_tensor("w", history.device, transpose=True)
        return torch.sparse.mm(w_t, history.float().T).T  # history @ W
