"""What a batch is: dense rows of the sparse matrices, the samplers that order the rows
(phased epochs for GANs, unrepeated evaluation shards for DDP) and the collates that turn
positions into tensors. The DataModule composes these; models use `dense_rows` alone."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler


def dense_rows(m: sp.csr_matrix, rows: np.ndarray) -> torch.Tensor:
    """Dense float32 rows of a CSR matrix (only the batch is ever densified)."""
    sub = m[rows]
    out = torch.zeros(len(rows), m.shape[1])
    r = np.repeat(np.arange(len(rows)), np.diff(sub.indptr))
    out[torch.from_numpy(r), torch.from_numpy(sub.indices.astype(np.int64))] = torch.from_numpy(
        sub.data.astype(np.float32)
    )
    return out


class Indices(Dataset):
    """Positions 0..n-1; samplers and collates decide which rows they stand for."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        return i


class PhasedBatchSampler(Sampler[list]):
    """Per epoch, for each phase `(name, batch_size, passes)`: `passes` shuffled passes over
    all rows in batches of `batch_size`; every index is yielded as `(row, phase_id)`.

    This is the schedule of vector-wise GANs (CFGAN: 2 passes of D at batch 64, then 4
    passes of G at batch 32, per epoch). Shuffles are seeded by (seed, epoch, phase, pass),
    so every epoch gets new batches and a resumed run sees the same batches. Under DDP each
    rank takes every world-th row of each shuffle (padded so that ranks step in lock-step).

    Lightning calls `set_epoch` on a loader's sampler, never on its *batch* sampler, so during
    a fit the epoch comes from `epoch_fn` (the trainer's current epoch); where it returns None
    (no fit running), `set_epoch` decides, for loops that drive the sampler by hand.
    """

    def __init__(
        self,
        n: int,
        schedule: list,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        epoch_fn: Callable[[], int | None] | None = None,
    ):
        self.n, self.schedule, self.seed = n, [tuple(p) for p in schedule], seed
        self.rank, self.world, self.epoch = rank, world, 0
        self.epoch_fn = epoch_fn
        self.skip = 0  # batches of this epoch already trained before a resume

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _per_rank(self) -> int:
        return math.ceil(self.n / self.world)

    def __len__(self) -> int:
        m = self._per_rank()
        return sum(math.ceil(m / bs) * passes for _, bs, passes in self.schedule)

    def __iter__(self):
        epoch = self.epoch_fn() if self.epoch_fn is not None else None
        if epoch is not None:
            self.epoch = int(epoch)
        skip, self.skip = self.skip, 0
        for k, batch in enumerate(self._batches()):
            if k >= skip:
                yield batch

    def _batches(self):
        m = self._per_rank()
        for phase, (_, bs, passes) in enumerate(self.schedule):
            for p in range(passes):
                seed = np.random.SeedSequence([self.seed, self.epoch, phase, p]).generate_state(1)[
                    0
                ]
                g = torch.Generator().manual_seed(int(seed))
                perm = torch.randperm(self.n, generator=g)
                perm = torch.cat([perm, perm[: m * self.world - self.n]])  # pad for lock-step
                mine = perm[self.rank :: self.world].tolist()
                for lo in range(0, m, bs):
                    yield [(i, phase, p) for i in mine[lo : lo + bs]]


class UnrepeatedDistributedSampler(Sampler[int]):
    """Shards `n` indices across ranks without padding: each index is seen exactly once.

    Lightning's default DistributedSampler repeats indices to even out the shards, which
    would count some users twice in the metric means.
    """

    def __init__(self, n: int, num_replicas: int | None = None, rank: int | None = None):
        if num_replicas is None:
            num_replicas = dist.get_world_size() if dist.is_initialized() else 1
        if rank is None:
            rank = dist.get_rank() if dist.is_initialized() else 0
        self.indices = list(range(rank, n, num_replicas))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class ResumableLoader(DataLoader):
    """A training loader whose position inside an epoch survives a checkpoint.

    Lightning stores `state_dict()` in mid-epoch checkpoints (e.g. written on SIGTERM) and
    hands it back on resume; the phased sampler then skips the batches already trained, so
    a killed-and-resumed run sees exactly the batches of an uninterrupted one.
    """

    def __init__(self, *args, progress=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._progress = progress or (lambda: 0)

    def state_dict(self) -> dict:
        return {"batches_done": int(self._progress())}

    def load_state_dict(self, state: dict) -> None:
        self.batch_sampler.skip = int(state.get("batches_done", 0))


class RowCollate:
    """Turns sampler positions into `{"rows", "x"[, "features"][, "phase", "pass"]}`.

    Position i is row `row_ids[i]` of `matrix`; `features` (rows x d) are added when given.
    """

    def __init__(
        self,
        matrix: sp.csr_matrix,
        row_ids: np.ndarray | None = None,
        features: torch.Tensor | None = None,
    ):
        self.matrix, self.row_ids, self.features = matrix, row_ids, features

    def __call__(self, ids: list) -> dict[str, torch.Tensor]:
        tags = None
        if ids and isinstance(ids[0], tuple):
            tags = ids[0][1:]
            ids = [i[0] for i in ids]
        rows = np.asarray(ids, dtype=np.int64)
        if self.row_ids is not None:
            rows = self.row_ids[rows]
        out = {"rows": torch.from_numpy(rows), "x": dense_rows(self.matrix, rows)}
        if self.features is not None:
            out["features"] = self.features[rows]
        if tags is not None:  # plain ints: reading them never syncs with the device
            out["phase"], out["pass"] = tags
        return out


class EvalCollate:
    """Turns user ids into `{"users", "history", "target"[, "features"]}` (history is masked
    at scoring)."""

    def __init__(
        self,
        history: sp.csr_matrix,
        target: sp.csr_matrix,
        users: np.ndarray,
        features: torch.Tensor | None = None,
    ):
        self.history, self.target, self.users, self.features = history, target, users, features

    def __call__(self, ids: list[int]) -> dict[str, torch.Tensor]:
        users = self.users[np.asarray(ids, dtype=np.int64)]
        out = {
            "users": torch.from_numpy(users),
            "history": dense_rows(self.history, users),
            "target": dense_rows(self.target, users) > 0,
        }
        if self.features is not None:
            out["features"] = self.features[users]
        return out
