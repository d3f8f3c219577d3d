"""Samplers the training steps draw from: hash-defined negative samples of a row's unobserved
entries (CFGAN's N^ZR / N^PM), uniform in-row negatives (BPR) and the positive pairs of a
dense batch. They run on the batch's device and never densify more than the batch."""

from __future__ import annotations

import scipy.sparse as sp
import torch

from advrec.data.batches import dense_rows

# splitmix64 constants as signed int64 (torch has no uint64 arithmetic)
_GOLDEN, _M1, _M2 = -7046029254386353131, -4658895280553007687, -7723592293110705685


def _lsr(z: torch.Tensor, s: int) -> torch.Tensor:
    return (z >> s) & ((1 << (64 - s)) - 1)  # logical shift right on int64


def _mix(z: torch.Tensor) -> torch.Tensor:
    z = z + _GOLDEN
    z = (z ^ _lsr(z, 30)) * _M1
    z = (z ^ _lsr(z, 27)) * _M2
    return z ^ _lsr(z, 31)


def negative_sample(
    ids: torch.Tensor, x: torch.Tensor, percent: float, seed: int, epoch: int, salt: int
) -> torch.Tensor:
    """Bool mask of floor(percent * |unobserved| / 100) unobserved entries of each row `x`
    (row ids `ids`).

    The choice is a hash of (seed, epoch, salt, row, column): the same row gets the same
    sample in every batch of an epoch (D and G phases agree), a new one each epoch, and two
    salts give independent samples; at one salt a smaller percent takes a prefix of the same
    ordering.
    """
    b, n = x.shape
    if percent <= 0:
        return torch.zeros_like(x, dtype=torch.bool)
    key = torch.tensor([(seed * 1_000_003 + epoch) * 7 + salt], device=x.device)
    cells = ids.to(torch.int64)[:, None] * n + torch.arange(n, device=x.device)
    u = _lsr(_mix(cells ^ _mix(key)), 1)  # uniform non-negative int64 keys
    observed = x > 0
    u = u.masked_fill(observed, torch.iinfo(torch.int64).max)
    n_pick = (percent * (~observed).sum(1, dtype=torch.int64)).div(100, rounding_mode="floor")
    kth = u.sort(1).values.gather(1, (n_pick - 1).clamp(min=0)[:, None].long())
    return (u <= kth) & (n_pick > 0)[:, None] & ~observed


class HashedNegatives:
    """`negative_sample` of the rows of one training matrix. When the whole matrix fits in
    `max_entries` booleans, the first request of an epoch draws that epoch's sample for every
    row at once (the same samples, sorted once per epoch instead of once per batch and pass);
    otherwise each batch draws its own. Nothing depends on hooks having run, so a run resumed
    mid-epoch draws what an uninterrupted one draws."""

    def __init__(self, seed: int, max_entries: int = 50_000_000):
        self.seed, self.max_entries = seed, max_entries
        self.matrix: sp.csr_matrix | None = None
        self._cache: dict[tuple, torch.Tensor] = {}  # (epoch, salt, percent) -> (rows, n)
        self._last: tuple | None = None  # (ids tensor, key, sample) of the latest request

    def use(self, matrix: sp.csr_matrix) -> None:
        """Sample the rows of `matrix` (the rows a fit trains on) from now on."""
        self.matrix, self._cache, self._last = matrix, {}, None

    def __call__(self, ids, x, percent: float, salt: int, epoch: int) -> torch.Tensor:
        """The sample of rows `ids` (dense `x`) at `percent` and `salt` in `epoch`."""
        m = self.matrix
        if percent <= 0 or m is None or m.shape[0] * m.shape[1] > self.max_entries:
            return negative_sample(ids, x, percent, self.seed, epoch, salt)
        key = (epoch, salt, percent)
        if self._last is not None and self._last[0] is ids and self._last[1] == key:
            return self._last[2]  # the same batch asks again (CFGAN: ZR and PM, one sample)
        if key not in self._cache:
            self._cache = {k: v for k, v in self._cache.items() if k[0] == epoch}
            self._cache[key] = self._all_rows(percent, salt, epoch, x.device)
        out = self._cache[key][ids]
        self._last = (ids, key, out)
        return out

    def _all_rows(self, percent: float, salt: int, epoch: int, device) -> torch.Tensor:
        m = self.matrix
        out = torch.empty(m.shape, dtype=torch.bool, device=device)
        for lo in range(0, m.shape[0], 4096):
            ids = torch.arange(lo, min(lo + 4096, m.shape[0]))
            x = dense_rows(m, ids.numpy()).to(device)
            out[lo : lo + len(ids)] = negative_sample(
                ids.to(device), x, percent, self.seed, epoch, salt
            )
        return out


def positive_pairs(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(position in the batch, item) of every positive of a dense batch, row-major order."""
    at, item = x.nonzero(as_tuple=True)
    return at, item


def sample_unobserved(x: torch.Tensor, at: torch.Tensor, k: int) -> torch.Tensor:
    """k uniform draws (with replacement) among the unobserved items of batch rows `at`
    (sorted positions, one per pair): (len(at), k). Drawn per batch row once (multinomial
    over 1 - x), then handed to that row's pairs."""
    weights = (x == 0).to(torch.float32)
    per_row = torch.bincount(at, minlength=len(x)).max().item() * k if len(at) else 0
    draws = torch.multinomial(weights, max(per_row, 1), replacement=True)  # (B, per_row)
    cols = rank_within_rows(at, len(x))[:, None] * k + torch.arange(k, device=x.device)
    return draws[at[:, None], cols]


def rank_within_rows(at: torch.Tensor, n_rows: int) -> torch.Tensor:
    """For sorted row positions, the rank of each entry within its row (0, 1, ...)."""
    order = torch.arange(len(at), device=at.device)
    first = torch.full((n_rows,), len(at), dtype=torch.long, device=at.device)
    first.scatter_reduce_(0, at, order, reduce="amin", include_self=True)
    return order - first[at]
