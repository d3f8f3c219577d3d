"""Neighbourhood pieces the similarity baselines share: cosine neighbours with shrinkage
(ItemKNN over items, UserKNN over users) and a closed-form model whose state is sparse
matrices, kept in checkpoints as plain tensors."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from advrec.models.base import ClosedForm

# the hyper-parameters of cosine KNN (ItemKNN, UserKNN), checked by ClosedForm.check_limits
COSINE_LIMITS = {
    "topk": ("a whole number >= 1 (neighbours kept)", lambda v: v >= 1 and v == int(v)),
    "shrink": ("a number >= 0", lambda v: v >= 0),
}


def cosine_neighbours(
    x: sp.csc_matrix, k: int, shrink: float, block_size: int = 2048
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each column c of `x`: the `k` other columns most similar to it,
    sim(a, c) = <x_a, x_c> / (|x_a| |x_c| + shrink), as (idx, val), both (n_columns, k).
    Blocks of `block_size` target columns bound the memory."""
    n = x.shape[1]
    x = x.astype(np.float32)
    norms = torch.from_numpy(np.sqrt(np.asarray(x.multiply(x).sum(0)).ravel()))
    idx = torch.empty(n, k, dtype=torch.long)
    val = torch.empty(n, k)
    xt = x.T.tocsr()
    for lo in range(0, n, block_size):
        hi = min(lo + block_size, n)
        co = torch.from_numpy((xt @ x[:, lo:hi]).toarray())  # (n, hi-lo)
        sim = co / (norms[:, None] * norms[None, lo:hi] + float(shrink) + 1e-12)
        sim[torch.arange(lo, hi), torch.arange(hi - lo)] = 0.0
        v, i = torch.topk(sim, k, dim=0)
        idx[lo:hi], val[lo:hi] = i.T, v.T
    return idx, val


def topk_rows(w: np.ndarray, k: int) -> sp.csr_matrix:
    """The `k` largest entries of each row of the dense block `w`, zeros dropped."""
    k = min(k, w.shape[1])
    idx = np.argpartition(-w, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(w, idx, 1)
    rows = np.repeat(np.arange(w.shape[0]), k)
    out = sp.csr_matrix((vals.ravel(), (rows, idx.ravel())), shape=w.shape, dtype=np.float32)
    out.eliminate_zeros()
    out.sort_indices()
    return out


class SparseState(ClosedForm):
    """A closed-form model whose fitted state is named sparse matrices (`self.sparse`),
    saved in checkpoints as CSR tensors and restored on load."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.sparse: dict[str, sp.csr_matrix] = {}
        self._torch: dict[str, torch.Tensor] = {}

    def set_sparse(self, **matrices: sp.csr_matrix) -> None:
        self.sparse = {k: sp.csr_matrix(v, dtype=np.float32) for k, v in matrices.items()}
        self._torch = {}

    def sparse_tensor(self, name: str, device, transpose: bool = False) -> torch.Tensor:
        """`self.sparse[name]` (or its transpose) as a torch sparse tensor on `device`,
        built once."""
        key = f"{name}.T" if transpose else name
        t = self._torch.get(key)
        if t is None or t.device != torch.device(device):
            m = (self.sparse[name].T if transpose else self.sparse[name]).tocoo()
            ind = torch.from_numpy(np.vstack([m.row, m.col]).astype(np.int64))
            t = torch.sparse_coo_tensor(
                ind, torch.from_numpy(m.data), m.shape, device=device, check_invariants=True
            )
            t = t.coalesce()
            self._torch[key] = t
        return t

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["advrec_sparse"] = {
            k: {
                "indptr": torch.from_numpy(m.indptr.astype(np.int64)),
                "indices": torch.from_numpy(m.indices.astype(np.int64)),
                "data": torch.from_numpy(m.data),
                "shape": list(m.shape),
            }
            for k, m in self.sparse.items()
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        stored = checkpoint.get("advrec_sparse") or {}
        self.set_sparse(
            **{
                k: sp.csr_matrix(
                    (v["data"].numpy(), v["indices"].numpy(), v["indptr"].numpy()),
                    shape=tuple(v["shape"]),
                )
                for k, v in stored.items()
            }
        )
