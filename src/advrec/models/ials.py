"""iALS (Hu, Koren & Volinsky 2008) as revisited by Rendle et al. (RecSys 2022): implicit
matrix factorisation by alternating exact least squares.

Loss (Rendle et al., eq. 2, their released `ials_main.cc`), scores y_ui = w_u . h_i:

    sum_{(u,i) observed} (y_ui - 1)^2 + unobserved_weight * sum_{all u,i} y_ui^2
    + reg * (sum_u (|I_u| + unobserved_weight |I|)^reg_exp |w_u|^2 + the same over items)

`reg_exp=1` scales each row's L2 weight with its frequency (their setting); `reg_exp=0` is
Hu et al.'s model (confidence 1 + r / unobserved_weight, constant L2 weight), which the
`implicit` package fits: tests/test_ials.py checks a sweep against it.
Embeddings start from N(0, stddev^2 / dim). One epoch is one sweep: every item is solved
exactly against the users (first training batch of the epoch), then the users, batch by
batch, against the new items, so the users that are scored are always optimal for the items.
Rendle et al. sweep users first; starting from random embeddings the order is only a choice of
which side is solved first. Rows without interactions keep their initial embedding (as in the
released code). The validation metric picks the epoch count (`trainer.max_epochs` caps it).

Users it never solved (cold users, a new user in advrec-recommend) are scored by the fold-in:
their embedding solved exactly from the history they are scored with against the trained items
(the user step of a sweep); a user with no history gets zero scores (nothing to fold in).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from advrec.data.batches import FitData
from advrec.errors import AdvrecError
from advrec.models.base import Recommender
from advrec.utils.compat import count_optimizer_step


def solve_rows(
    m: sp.csr_matrix,
    rows: np.ndarray,
    other: torch.Tensor,
    gram: torch.Tensor,
    unobserved_weight: float,
    reg: float,
    reg_exp: float,
    budget: int = 1 << 24,
) -> torch.Tensor:
    """The exact iALS solution for `rows` of `m` (rows x others) given the other side's
    embeddings `other` (others x d) and their Gramian: for row r with observed set S_r,
    (unobserved_weight G + sum_{j in S_r} e_j e_j^T + reg_r I) w_r = sum_{j in S_r} e_j.

    Rows are solved in groups of similar length, each padded to its longest row, so a group's
    gathered embeddings and d x d systems hold at most about `budget` numbers. Rows must have
    interactions.
    """
    d, dev = other.shape[1], other.device
    lengths = np.diff(m.indptr)[rows]
    order = np.argsort(lengths, kind="stable")
    padded = torch.cat([other, other.new_zeros(1, d)])  # index -1 -> a zero row
    base = unobserved_weight * gram
    out = other.new_empty(len(rows), d)
    failed = torch.zeros((), dtype=torch.bool, device=dev)  # read once at the end (one sync)
    lo = 0
    while lo < len(order):
        hi = lo + 1  # grow the group while its embeddings and systems fit (lengths ascend)
        while hi < len(order) and (hi + 1 - lo) * (lengths[order[hi]] + d) * d <= budget:
            hi += 1
        group = order[lo:hi]
        n_obs = lengths[group]
        width = int(n_obs.max())
        at = m.indptr[rows[group]][:, None] + np.arange(width)  # each row's entries, padded
        idx = np.where(np.arange(width) < n_obs[:, None], m.indices[np.minimum(at, m.nnz - 1)], -1)
        e = padded[torch.from_numpy(idx.astype(np.int64)).to(dev)]  # (g, width, d)
        a = base + e.transpose(1, 2) @ e
        n = torch.from_numpy(n_obs).to(dev, other.dtype)
        a.diagonal(dim1=1, dim2=2).add_(
            (reg * (n + unobserved_weight * m.shape[1]).pow(reg_exp))[:, None]
        )
        chol, info = torch.linalg.cholesky_ex(a)
        failed |= (info > 0).any()
        out[torch.from_numpy(group).to(dev)] = torch.cholesky_solve(
            e.sum(1, keepdim=True).mT, chol
        )[..., 0]
        lo = hi
    if bool(failed):
        raise AdvrecError(
            f"iALS: a least-squares system is not positive definite in float32 (dim {d}, "
            f"reg {reg}); raise model.reg or lower model.dim"
        )
    return out


def ials_embeddings(
    m: sp.csr_matrix,
    dim: int,
    reg: float = 0.003,
    unobserved_weight: float = 0.1,
    sweeps: int = 8,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(users, items) embeddings of `sweeps` exact iALS sweeps on `m` (frequency-scaled
    regularisation, N(0, 0.01 / dim) start): the warm model other models build on (GAR).
    Rows without interactions stay zero."""
    g = torch.Generator().manual_seed(int(seed))
    users = torch.zeros(m.shape[0], dim)
    items = torch.randn(m.shape[1], dim, generator=g) * (0.1 / dim**0.5)
    by_item = m.T.tocsr()
    rows, cols = np.flatnonzero(np.diff(m.indptr)), np.flatnonzero(np.diff(by_item.indptr))
    for _ in range(sweeps):
        for side, other, mat, idx in ((users, items, m, rows), (items, users, by_item, cols)):
            side[torch.from_numpy(idx)] = solve_rows(
                mat, idx, other, other.T @ other, unobserved_weight, reg, 1.0
            )
    return users, items


def warm_embeddings(train: sp.csr_matrix, h) -> tuple[torch.Tensor, ...]:
    """The warm model that GAR and DropoutNet build on: (users, items, warm-user mask) of
    `ials_embeddings` with the model's `dim`, `warm_reg`, `warm_sweeps` and `seed`
    (deterministic: a resumed fit recomputes the same embeddings)."""
    users, items = ials_embeddings(train, h.dim, h.warm_reg, sweeps=h.warm_sweeps, seed=h.seed)
    return users, items, torch.from_numpy(train.getnnz(axis=1) > 0)


class IALS(Recommender):
    """Implicit ALS with frequency-scaled regularisation; see the module docstring."""

    reads_history = True  # for the users it never solved: the fold-in

    limits = {
        "dim": ("an integer >= 1", lambda v: v >= 1 and v == int(v)),
        "reg": ("a number > 0 (the L2 weight)", lambda v: v > 0),
        "reg_exp": ("a number >= 0 (0: constant L2 weight, 1: frequency-scaled)", lambda v: v >= 0),
        "unobserved_weight": ("a number >= 0", lambda v: v >= 0),
        "stddev": ("a number >= 0", lambda v: v >= 0),
    }

    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int = 64,
        reg: float = 0.003,
        reg_exp: float = 1.0,
        unobserved_weight: float = 0.1,
        stddev: float = 0.1,
        batch_size: int = 1024,
        ks: tuple = (5, 10, 20),
    ):
        super().__init__(n_users, n_items, ks)
        self.save_hyperparameters()
        self.check_limits()
        self.automatic_optimization = False
        std = stddev / dim**0.5
        self.register_buffer("users", torch.randn(n_users, dim) * std)
        self.register_buffer("items", torch.randn(n_items, dim) * std)
        # the epoch whose item step is done: stored, so a run resumed mid-epoch goes on with
        # the users instead of solving the items again
        self.register_buffer("items_epoch", torch.tensor(-1))
        # users solved in training; the others are scored by the fold-in
        self.register_buffer("solved", torch.zeros(n_users, dtype=torch.bool))
        self._train: sp.csr_matrix | None = None
        self._by_item: sp.csr_matrix | None = None
        self._item_gram: tuple[int, torch.Tensor] | None = None
        self._items_done: int | None = None  # items_epoch on the host (no sync per step)

    def configure_optimizers(self):
        return None  # exact least squares, no gradients

    def prepare_fit(self, data: FitData) -> None:
        self._train = data.train.tocsr()
        self._by_item = data.train.T.tocsr()
        self._item_gram = None
        self._items_done = None  # read from the (possibly resumed) buffer at the first step

    def _solve(
        self, m: sp.csr_matrix, rows: np.ndarray, other: torch.Tensor, gram: torch.Tensor
    ) -> torch.Tensor:
        h = self.hparams
        return solve_rows(m, rows, other, gram, h.unobserved_weight, h.reg, h.reg_exp)

    def training_step(self, batch: dict, batch_idx: int) -> None:
        # exact solves in float32 even under a mixed-precision trainer
        with torch.autocast(self.device.type, enabled=False):
            epoch = self.current_epoch
            if self._items_done is None:
                self._items_done = int(self.items_epoch)
            if self._items_done != epoch:
                items = np.flatnonzero(np.diff(self._by_item.indptr))
                self.items[torch.from_numpy(items).to(self.device)] = self._solve(
                    self._by_item, items, self.users, self.users.T @ self.users
                )
                self.items_epoch.fill_(epoch)
                self._items_done = epoch
            if self._item_gram is None or self._item_gram[0] != epoch:
                self._item_gram = (epoch, self.items.T @ self.items)  # for this epoch's users
            ids = batch["ids"]
            users = ids.cpu().numpy()
            users = users[np.diff(self._train.indptr)[users] > 0]
            solved = self.users.new_empty(0, self.users.shape[1])
            if len(users):
                solved = self._solve(self._train, users, self.items, self._item_gram[1])
            self._write_users(torch.from_numpy(users).to(self.device), solved, len(ids))
        # the batch's exact solve is its update: count it where Lightning counts optimizer
        # steps, or global_step stays 0 and no checkpoint (the chosen epoch) is ever saved
        count_optimizer_step(self.trainer)

    def _write_users(self, users: torch.Tensor, solved: torch.Tensor, width: int) -> None:
        """Store this batch's solved users. Under DDP each process solves its own shard of
        the users, so every process receives every process's solutions (one all-gather per
        batch, padded to the batch width): all ranks hold the same embeddings, and the next
        item step, the loss and the checkpoints see every user."""
        if self.trainer.world_size > 1:
            ids = torch.full((width,), -1, dtype=torch.long, device=self.device)
            rows = solved.new_zeros(width, solved.shape[1])
            ids[: len(users)], rows[: len(users)] = users, solved
            ids, rows = self.all_gather(ids).flatten(), self.all_gather(rows).flatten(0, 1)
            # the sampler pads the shards with repeated rows: keep one solution per user, the
            # same one on every rank (duplicate indices in a write have no defined winner)
            found, first = np.unique(ids.cpu().numpy(), return_index=True)
            first = torch.from_numpy(first[found >= 0]).to(self.device)
            users, solved = ids[first], rows[first]
        if len(users):
            self.users[users] = solved
            self.solved[users] = True

    def loss(self) -> dict[str, torch.Tensor]:
        """The objective's three terms over the training matrix (logged each epoch)."""
        h, m = self.hparams, self._train
        rows = torch.from_numpy(np.repeat(np.arange(m.shape[0]), np.diff(m.indptr)))
        cols = torch.from_numpy(m.indices.astype(np.int64))
        observed = self.users.new_zeros(())
        step = max(1, (1 << 22) // self.hparams.dim)  # observed pairs scored at a time
        for lo in range(0, m.nnz, step):
            r, c = rows[lo : lo + step].to(self.device), cols[lo : lo + step].to(self.device)
            observed = observed + ((self.users[r] * self.items[c]).sum(1) - 1).pow(2).sum()
        unobserved = (
            h.unobserved_weight * ((self.users.T @ self.users) * (self.items.T @ self.items)).sum()
        )
        reg = observed.new_zeros(())
        for emb, counts, n_other in (
            (self.users, np.diff(m.indptr), m.shape[1]),
            (self.items, np.diff(self._by_item.indptr), m.shape[0]),
        ):
            c = torch.from_numpy(counts).to(self.device, emb.dtype)
            w = (c + h.unobserved_weight * n_other).pow(h.reg_exp) * (c > 0)
            reg = reg + h.reg * (w * emb.pow(2).sum(1)).sum()
        return {"loss": observed + unobserved + reg, "observed": observed, "unobserved": unobserved}

    def on_train_epoch_end(self) -> None:
        for k, v in self.loss().items():
            self.log(f"train/{k}", v, prog_bar=k == "loss")

    def on_fit_end(self) -> None:
        self._train = self._by_item = self._item_gram = self._items_done = None

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint["state_dict"]
        if "solved" not in state:  # written before the fold-in: every user counted as solved
            state["solved"] = torch.ones(len(state["users"]), dtype=torch.bool)

    def score(self, users: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        if self.scoring_new_users:
            return self.fold_in(history) @ self.items.T
        emb, new = self.users[users], ~self.solved[users]
        if new.any():
            emb = emb.clone()
            emb[new] = self.fold_in(history[new])
        return emb @ self.items.T

    def fold_in(self, history: torch.Tensor) -> torch.Tensor:
        """Exact user solutions for dense `history` rows against the trained items (the user
        step of a sweep); an empty row gets a zero embedding."""
        m = sp.csr_matrix(history.detach().cpu().float().numpy())
        out = self.users.new_zeros(m.shape[0], self.users.shape[1])
        rows = np.flatnonzero(np.diff(m.indptr))
        if len(rows):
            with torch.autocast(self.device.type, enabled=False):
                items = self.items.float()
                out[torch.from_numpy(rows).to(out.device)] = self._solve(
                    m, rows, items, items.T @ items
                ).to(out.dtype)
        return out
