"""SLIM with ElasticNet (Ning & Karypis, ICDM 2011), as in the ECIR 2022 framework.

For each item j, a non-negative ElasticNet regresses j's column of the training matrix on
all other columns (j's own column zeroed, so W_jj = 0):
    min_w 1/(2 n_users) |x_j - X w|^2 + alpha l1_ratio |w|_1 + alpha (1 - l1_ratio)/2 |w|^2,
fitted by scikit-learn's coordinate descent (sparse input, random coordinate order with a
fixed seed). Column j of W keeps its `topk` largest coefficients; score(u, j) = sum_i x_ui
W_ij. Items are split into `n_jobs` chunks fitted in parallel (joblib), each worker with its
own copy of the matrix. Every column is its own fit from zero, as released: a warm start
would carry item j-1's coefficient for j into j's fit, where coordinate descent never
touches j's zeroed column (W_jj > 0), and W would depend on how items are chunked.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from joblib import Parallel, delayed, effective_n_jobs

from advrec.models.similarity import SparseState


def _fit_columns(x: sp.csc_matrix, items: np.ndarray, h: dict) -> tuple:
    """(rows, cols, values) of W's columns `items`."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import ElasticNet

    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    x = x.copy()
    model = ElasticNet(
        alpha=h["alpha"],
        l1_ratio=h["l1_ratio"],
        positive=True,
        fit_intercept=False,
        copy_X=False,
        precompute=True,
        selection="random",
        random_state=h["seed"],
        max_iter=h["max_iter"],
        tol=h["tol"],
    )
    rows, cols, vals = [], [], []
    for j in items:
        lo, hi = x.indptr[j], x.indptr[j + 1]
        y = x[:, j].toarray().ravel()
        backup = x.data[lo:hi].copy()
        x.data[lo:hi] = 0.0  # j may not explain itself
        model.fit(x, y)
        x.data[lo:hi] = backup
        coef = model.sparse_coef_.tocsr()
        idx, val = coef.indices, coef.data
        keep = val > 0
        idx, val = idx[keep], val[keep]
        if len(val) > h["topk"]:
            best = np.argpartition(-val, h["topk"] - 1)[: h["topk"]]
            idx, val = idx[best], val[best]
        rows.append(idx)
        cols.append(np.full(len(idx), j))
        vals.append(val)
    cat = np.concatenate
    return cat(rows or [[]]), cat(cols or [[]]), cat(vals or [[]])


class SLIM(SparseState):
    reads_history = True

    limits = {
        "topk": ("a whole number >= 1", lambda v: v >= 1 and v == int(v)),
        "alpha": ("a number > 0", lambda v: v > 0),
        "l1_ratio": ("a number in [0, 1]", lambda v: 0 <= v <= 1),
    }

    def __init__(
        self,
        n_users: int,
        n_items: int,
        topk: int = 100,
        alpha: float = 1e-3,
        l1_ratio: float = 0.1,
        max_iter: int = 100,
        tol: float = 1e-4,
        n_jobs: int = -1,
        seed: int = 0,
        **kw,
    ):
        super().__init__(n_users, n_items, **kw)
        self.save_hyperparameters()
        self.check_limits()

    def fit_matrix(self, matrix: sp.csr_matrix) -> None:
        h = self.hparams
        x = sp.csc_matrix(matrix, dtype=np.float32)
        x.data[:] = 1.0
        settings = {k: h[k] for k in ("alpha", "l1_ratio", "max_iter", "tol", "seed")}
        settings["topk"] = int(h.topk)
        jobs = effective_n_jobs(h.n_jobs)  # -1: every CPU
        chunks = [c for c in np.array_split(np.arange(self.n_items), jobs) if len(c)]
        parts = Parallel(n_jobs=h.n_jobs)(
            delayed(_fit_columns)(x, chunk, settings) for chunk in chunks
        )
        rows, cols, vals = (np.concatenate([p[i] for p in parts]) for i in range(3))
        w = sp.csr_matrix(
            (vals.astype(np.float32), (rows.astype(np.int64), cols.astype(np.int64))),
            shape=(self.n_items, self.n_items),
        )
        self.set_sparse(w=w)

    def score(self, users: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        w_t = self.sparse_tensor("w", history.device, transpose=True)
        return torch.sparse.mm(w_t, history.float().T).T  # history @ W
