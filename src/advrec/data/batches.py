"""What a batch is: the plan a model declares for its training batches, dense rows of the
sparse matrices, the samplers that order the rows (phased epochs for GANs, unrepeated
evaluation shards for DDP) and the collates that turn positions into tensors.

The handshake goes one way: a model declares its `Plan` (rows, phases, features); the
DataModule builds loaders from it and hands the model a `FitData` when a fit starts. Models
import this module, never the DataModule's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

ROWS = ("users", "items")


@dataclass(frozen=True)
class Phase:
    """One part of an epoch: `passes` shuffled passes over the training rows in batches of
    `batch_size`; batches carry `phase=name` and the pass number."""

    name: str
    batch_size: int
    passes: int = 1


@dataclass(frozen=True)
class Plan:
    """What a model trains on. `rows`: a training row is a user (its items) or an item (its
    users); `phases`: the epoch (None: one pass at `data.batch_size`; empty: no training
    batches, e.g. closed-form models, which fit from the matrix); `features`: batches carry
    the users' encoded features."""

    rows: str = "users"
    phases: tuple[Phase, ...] | None = None
    features: bool = False

    def __post_init__(self) -> None:
        if self.rows not in ROWS:
            raise ValueError(f"rows={self.rows!r}: choose one of {ROWS}")


@dataclass(frozen=True)
class FitData:
    """What a model receives when a fit starts (`Recommender.prepare_fit`).

    `train` is users x items (train, or train + validation in a refit); `rows` is the same
    matrix in the plan's orientation (items x users for item rows); `row_ids` are the rows
    trained on (a cold-start split's held-out users are not); `user_features` the encoded
    features of every user (None without features).
    """

    train: sp.csr_matrix
    rows: sp.csr_matrix
    row_ids: np.ndarray
    user_features: torch.Tensor | None = None


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

    def __getitems__(self, batch: list) -> list:
        return batch  # a batch of positions in one call, not one call per position


class TaggedBatch(list):
    """A batch of row positions that knows its phase and pass (one object per batch, not a
    tag per position)."""

    def __init__(self, positions: list, phase: str, pass_: int):
        super().__init__(positions)
        self.phase, self.pass_ = phase, pass_


class PhasedBatchSampler(Sampler[list]):
    """Per epoch, for each `Phase`: `passes` shuffled passes over all rows in batches of
    `batch_size`; each batch is a `TaggedBatch` of positions with its phase name and pass.

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
        phases: tuple[Phase, ...],
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        epoch_fn: Callable[[], int | None] | None = None,
    ):
        self.n, self.phases, self.seed = n, tuple(phases), seed
        self.rank, self.world, self.epoch = rank, world, 0
        self.epoch_fn = epoch_fn
        self.skip = 0  # batches of this epoch already trained before a resume

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _per_rank(self) -> int:
        return math.ceil(self.n / self.world)

    def __len__(self) -> int:
        m = self._per_rank()
        return sum(math.ceil(m / p.batch_size) * p.passes for p in self.phases)

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
        for k, phase in enumerate(self.phases):
            for p in range(phase.passes):
                seq = np.random.SeedSequence([self.seed, self.epoch, k, p])
                g = torch.Generator().manual_seed(int(seq.generate_state(1)[0]))
                perm = torch.randperm(self.n, generator=g)
                perm = torch.cat([perm, perm[: m * self.world - self.n]])  # pad for lock-step
                mine = perm[self.rank :: self.world].tolist()
                for lo in range(0, m, phase.batch_size):
                    yield TaggedBatch(mine[lo : lo + phase.batch_size], phase.name, p)


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


DENSE_ROWS_LIMIT = 2**25  # entries (128 MiB of float32): a training matrix kept dense


class RowCollate:
    """Turns sampler positions into `{"ids", "x"[, "features"][, "phase", "pass"]}`.

    Position i is row `row_ids[i]` of `matrix` (`ids`: those row ids, `x`: the dense rows);
    `features` (rows x d) are added when given. A matrix of at most `dense_limit` entries is
    densified once, so a batch is one index instead of a sparse slice (the same values).
    """

    def __init__(
        self,
        matrix: sp.csr_matrix,
        row_ids: np.ndarray | None = None,
        features: torch.Tensor | None = None,
        dense_limit: int = DENSE_ROWS_LIMIT,
    ):
        self.matrix, self.row_ids, self.features = matrix, row_ids, features
        small = matrix.shape[0] * matrix.shape[1] <= dense_limit
        self.dense = torch.from_numpy(matrix.toarray().astype(np.float32)) if small else None

    def __call__(self, ids: list) -> dict[str, torch.Tensor]:
        rows = np.asarray(ids, dtype=np.int64)
        if self.row_ids is not None:
            rows = self.row_ids[rows]
        ids_t = torch.from_numpy(rows)
        x = dense_rows(self.matrix, rows) if self.dense is None else self.dense[ids_t]
        out = {"ids": ids_t, "x": x}
        if self.features is not None:
            out["features"] = self.features[rows]
        if isinstance(ids, TaggedBatch):  # plain values: reading them never syncs a device
            out["phase"], out["pass"] = ids.phase, ids.pass_
        return out


class EvalCollate:
    """Turns positions into `{"users", "history"[, "target"][, "features"]}`: position i is
    user `users[i]`; history is masked at scoring; no `target` when ranking for serving."""

    def __init__(
        self,
        history: sp.csr_matrix,
        target: sp.csr_matrix | None,
        users: np.ndarray,
        features: torch.Tensor | None = None,
    ):
        self.history, self.target, self.users, self.features = history, target, users, features

    def __call__(self, ids: list[int]) -> dict[str, torch.Tensor]:
        users = self.users[np.asarray(ids, dtype=np.int64)]
        out = {"users": torch.from_numpy(users), "history": dense_rows(self.history, users)}
        if self.target is not None:
            out["target"] = dense_rows(self.target, users) > 0
        if self.features is not None:
            out["features"] = self.features[users]
        return out


def eval_loader(
    history: sp.csr_matrix,
    target: sp.csr_matrix | None,
    users: np.ndarray,
    features: torch.Tensor | None = None,
    batch_size: int = 512,
    num_workers: int = 0,
) -> DataLoader:
    """Batches of `users` for validation, test (with `target`) or prediction (without); under
    DDP every user is seen exactly once."""
    return DataLoader(
        Indices(len(users)),
        batch_size=batch_size,
        sampler=UnrepeatedDistributedSampler(len(users)),
        collate_fn=EvalCollate(history, target, users, features),
        num_workers=num_workers,
    )
