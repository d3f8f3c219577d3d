"""`RecDataModule`: loads a source, splits it, and serves row batches and evaluation batches."""

from __future__ import annotations

import copy
import logging
from dataclasses import replace

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
import torch.distributed as dist
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning import LightningDataModule
from lightning.pytorch.trainer.states import TrainerStatus
from torch.utils.data import DataLoader

from advrec.data.batches import (
    FitData,
    Indices,
    Phase,
    PhasedBatchSampler,
    Plan,
    ResumableLoader,
    RowCollate,
    eval_loader,
)
from advrec.data.features import FeatureEncoder, UserSet, encode_sets, join_user_features
from advrec.data.interactions import Interactions
from advrec.data.splits import Split, make_split
from advrec.errors import AdvrecError
from advrec.utils.compat import batches_processed

log = logging.getLogger(__name__)


def _raw_ids(ids: np.ndarray) -> torch.Tensor | list[str]:
    """Raw ids as a checkpoint can hold them without pickled numpy objects."""
    if np.issubdtype(ids.dtype, np.integer):
        return torch.from_numpy(ids.astype(np.int64))
    return [str(i) for i in ids]


def history_from(identity: dict) -> sp.csr_matrix:
    """The test-time history (users x items) a checkpoint's data identity stores."""
    indptr, indices = identity["history_indptr"].numpy(), identity["history_indices"].numpy()
    shape = (len(identity["user_ids"]), len(identity["item_ids"]))
    return sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr), shape=shape)


class RecDataModule(LightningDataModule):
    """Source -> split -> loaders.

    Training batches follow the `Plan` of the model being fitted (its rows, phases and
    features): row-index batches with dense rows built per batch from the CSR; users a
    cold-start split holds out whole are not training rows. Evaluation batches are users with
    their history (to mask) and their held-out items; under DDP every user is seen exactly
    once. At test time the history is train + validation.

    `features` (categorical / numeric / buckets columns, optional `path` + `id_column` of a
    CSV/Parquet keyed by user id) encodes the users' features, fitted on training users only;
    batches then carry each user's encoded row as `"features"`.
    """

    def __init__(
        self,
        source: dict,
        split: dict,
        val_fraction: float = 0.0,
        val_on_test: bool = False,
        batch_size: int = 256,
        eval_batch_size: int = 512,
        eval_users: str = "all",
        num_workers: int = 0,
        seed: int = 0,
        cache_dir: str | None = None,
        name: str = "data",
        features: dict | None = None,
        overfit_rows: int | None = None,
    ):
        super().__init__()
        if eval_users not in ("with_targets", "all"):
            raise AdvrecError(f"eval_users={eval_users!r}: choose 'with_targets' or 'all'")
        self.source_cfg, self.split_cfg = source, dict(split)
        self.val_fraction, self.val_on_test = val_fraction, val_on_test
        if val_on_test and val_fraction > 0:
            raise AdvrecError("val_on_test (protocol=test_selected) needs val_fraction=0")
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.eval_users, self.num_workers = eval_users, num_workers
        self.seed, self.cache_dir, self.name = seed, cache_dir, name
        if overfit_rows is not None and int(overfit_rows) < 1:
            raise AdvrecError(f"data.overfit_rows={overfit_rows}: give a count >= 1, or null")
        self.overfit_rows = overfit_rows  # debug=overfit: train on this many rows only
        self.split: Split | None = None
        self.refit = False  # True: validation folded into training (with_validation_in_train)
        self._items_by_users: sp.csr_matrix | None = None
        self.features_cfg = dict(features or {})
        self.feature_encoder: FeatureEncoder | None = None
        self.set_specs: list[UserSet] = []
        self.user_sets: dict[str, sp.csr_matrix] = {}  # name -> users x users (friends, ...)
        self.user_features: torch.Tensor | None = None  # (n_users, d), encoded

    # -- data ---------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.split is not None:
            return
        source = self.source_cfg
        if not hasattr(source, "load"):
            try:
                source = instantiate(source)
            except InstantiationException as e:
                if isinstance(e.__cause__, AdvrecError):  # the source's own check says it best
                    raise e.__cause__ from None
                raise AdvrecError(f"bad data.source option: {e}") from None
        data: Interactions = source.load()
        self.split = make_split(
            data,
            val_fraction=self.val_fraction,
            seed=self.seed,
            cache_dir=self.cache_dir,
            **self.split_cfg,
        )
        self.train_matrix = self.split.train
        self.test_matrix = self.split.test
        # protocol=test_selected: the "validation" loop looks at the test split (optimistic)
        self.val_matrix = self.test_matrix if self.val_on_test else self.split.val
        self.train_full_matrix = self.split.train_full
        self.val_history_matrix = self.split.val_history
        self.test_history_matrix = self.split.test_history
        self._setup_features(data)
        d = self.describe()
        log.info(
            "%s: %d users x %d items; train %d / val %d / test %d interactions",
            self.name,
            d["n_users"],
            d["n_items"],
            d["n_train"],
            d["n_val"],
            d["n_test"],
        )

    def _setup_features(self, data: Interactions) -> None:
        cfg = dict(self.features_cfg)
        path, id_column = cfg.pop("path", None), cfg.pop("id_column", None) or "user"
        sets = cfg.pop("sets", None) or {}
        bad = [k for k, v in sets.items() if not isinstance(v, dict)]
        if bad:
            raise AdvrecError(
                f"data.features.sets.{bad[0]}={sets[bad[0]]!r}: give its settings, e.g. "
                f"+data.features.sets.{bad[0]}.path=friends.csv"
            )
        try:
            self.set_specs = [UserSet(name=k, **dict(v)) for k, v in sets.items()]
        except TypeError as e:
            raise AdvrecError(
                f"bad data.features.sets option: {e}; known: path, format, columns, header, "
                "sep, symmetric, unknown"
            ) from None
        if path:
            data.user_features = join_user_features(data.user_ids, path, id_column)
        blocks = []
        if data.user_features is not None and (cfg.get("categorical") or cfg.get("numeric")):
            cfg = {k: v for k, v in cfg.items() if v is not None}
            try:
                encoder = FeatureEncoder(**cfg)
            except TypeError as e:
                raise AdvrecError(
                    f"bad data.features option: {e}; known: categorical, numeric, buckets, "
                    "sets, path, id_column"
                ) from None
            train_users = np.flatnonzero(np.diff(self.train_matrix.indptr) > 0)
            self.feature_encoder = encoder.fit(data.user_features, train_users)
            blocks.append(encoder.transform(data.user_features))
        self.user_sets = {s.name: s.read(data.user_ids) for s in self.set_specs}
        blocks += [m.toarray() for m in self.user_sets.values()]
        if blocks:
            self.user_features = torch.from_numpy(np.concatenate(blocks, axis=1))

    def feature_blocks(self) -> dict[str, tuple[int, int]]:
        """Encoded column (or user set) -> [start, stop) of its block in `user_features`."""
        out = dict(self.feature_encoder.blocks) if self.feature_encoder is not None else {}
        lo = self.feature_encoder.dim if self.feature_encoder is not None else 0
        for name, m in self.user_sets.items():
            out[name] = (lo, lo + m.shape[1])
            lo += m.shape[1]
        return out

    @property
    def n_features(self) -> int:
        return 0 if self.user_features is None else int(self.user_features.shape[1])

    def encode_new_users(self, table: pd.DataFrame) -> torch.Tensor:
        """Encoded features of users never seen (advrec-recommend's `new_users_file`): the
        columns as the training users' encoder reads them, and each user set from the column
        of its name (known user ids separated by `;` or spaces)."""
        parts = []
        if self.feature_encoder is not None:
            parts.append(self.feature_encoder.transform(table))
        if self.user_sets:
            parts.append(encode_sets(self.set_specs, self.user_sets, table, self.data.user_ids))
        return torch.from_numpy(np.concatenate(parts, axis=1))

    def with_validation_in_train(self) -> RecDataModule:
        """The same data with the validation interactions moved into training and no
        validation split: what a model is refit on before the test. Test batches (history
        train + validation) are unchanged."""
        if self.val_on_test or self.val_matrix is None:
            raise AdvrecError("there is no validation split to fold into training")
        other = copy.copy(self)
        other.train_matrix = self.train_full_matrix
        other.val_matrix = None
        other._items_by_users = None
        other.refit = True
        return other

    def model_kwargs(self) -> dict:
        """What models may need to know of the data beyond its shape."""
        return {
            "n_features": self.n_features,
            "feature_blocks": {c: list(b) for c, b in self.feature_blocks().items()},
        }

    @property
    def data(self) -> Interactions:
        return self.split.data

    @property
    def n_users(self) -> int:
        return self.data.n_users

    @property
    def n_items(self) -> int:
        return self.data.n_items

    def describe(self) -> dict:
        out = {"dataset": self.name, **self.data.describe(), **self.split.describe()}
        if self.user_features is not None:
            out["n_features"] = self.n_features
        for name, m in self.user_sets.items():
            out[f"n_{name}_pairs"] = int(m.nnz)
            out[f"n_users_without_{name}"] = int((np.diff(m.indptr) == 0).sum())
        return out

    def identity(self) -> dict:
        """What ties a checkpoint to this data: fingerprints of the interactions and of the
        split, the raw-id maps, and the test-time history and user features (so advrec-recommend
        serves known users without the data file)."""
        hist = self.history("test")
        return {
            "fingerprint": self.data.fingerprint(),
            "split": self.split.fingerprint(),
            "user_ids": _raw_ids(self.data.user_ids),
            "item_ids": _raw_ids(self.data.item_ids),
            "history_indptr": torch.from_numpy(hist.indptr.astype(np.int64)),
            "history_indices": torch.from_numpy(hist.indices.astype(np.int32)),
            "user_features": self.user_features,
        }

    def check_identity(self, stored: dict | None, ckpt: str) -> None:
        """Refuse data or a split other than those the checkpoint was trained on."""
        if not stored:
            log.warning("%s was written before checkpoints stored their data: not checked", ckpt)
            return
        data_now, split_now = self.data.fingerprint(), self.split.fingerprint()
        shape = f"{len(stored['user_ids'])} users x {len(stored['item_ids'])} items"
        if data_now != stored["fingerprint"]:
            raise AdvrecError(
                f"the data changed under {ckpt}: it was trained on {shape} (fingerprint "
                f"{stored['fingerprint']}), the data now reads {self.n_users} users x "
                f"{self.n_items} items (fingerprint {data_now}); point to the "
                "original file with +data.source.path=<file> (or paths.data_dir=<folder>)"
            )
        if split_now != stored["split"]:
            raise AdvrecError(
                f"the split differs from the one {ckpt} was trained on (same data, other "
                "train/test labels): its seed, split settings or cached split changed; "
                "evaluate with the checkpoint's own settings (no data.split / seed overrides)"
            )

    def history(self, stage: str) -> sp.csr_matrix:
        """What a user is known to have seen when `stage` ('val' or 'test') is evaluated: the
        training matrix, what held-out users reveal (split.reveal), and at test validation."""
        if stage == "val" and not self.val_on_test:
            return self.val_history_matrix
        return self.test_history_matrix

    def eval_users_for(self, stage: str) -> np.ndarray:
        target = self.val_matrix if stage == "val" else self.test_matrix
        if self.eval_users == "all":
            return np.arange(self.n_users)
        return np.flatnonzero(np.diff(target.indptr) > 0)

    # -- loaders ------------------------------------------------------------------------
    def plan_of(self, plan: Plan | None = None) -> Plan:
        """`plan`, else that of the model being fitted, else user rows; phases left open are
        one pass at `data.batch_size`."""
        if plan is None:
            trainer = getattr(self, "trainer", None)
            model = trainer.lightning_module if trainer is not None else None
            plan = model.plan() if model is not None else Plan()
        if plan.phases is None:
            plan = replace(plan, phases=(Phase("train", self.batch_size),))
        return plan

    def fit_rows_matrix(self, rows: str = "users") -> sp.csr_matrix:
        """The training matrix with `rows` as rows (users x items, or items x users)."""
        if rows == "users":
            return self.train_matrix
        if self._items_by_users is None:  # transposed once, not every epoch
            self._items_by_users = self.train_matrix.T.tocsr()
        return self._items_by_users

    def train_rows(self, rows: str = "users") -> np.ndarray:
        """The rows trained on: every row, except users the split holds out whole (and only
        the first `overfit_rows` of them under debug=overfit)."""
        n = self.fit_rows_matrix(rows).shape[0]
        if rows == "items":
            out = np.arange(n)
        else:
            out = np.setdiff1d(np.arange(n), self.split.held_out_users(refit=self.refit))
        return out[: self.overfit_rows] if self.overfit_rows else out

    def fit_data(self, plan: Plan | None = None) -> FitData:
        """What a model is handed when its fit starts."""
        plan = self.plan_of(plan)
        return FitData(
            train=self.train_matrix,
            rows=self.fit_rows_matrix(plan.rows),
            row_ids=self.train_rows(plan.rows),
            user_features=self.user_features,
        )

    def train_dataloader(self, plan: Plan | None = None) -> DataLoader:
        plan = self.plan_of(plan)
        m, row_ids = self.fit_rows_matrix(plan.rows), self.train_rows(plan.rows)
        ds = Indices(len(row_ids))
        distributed = dist.is_available() and dist.is_initialized()
        rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
        return ResumableLoader(
            ds,
            batch_sampler=PhasedBatchSampler(
                len(ds), plan.phases, self.seed, rank, world, epoch_fn=self._current_epoch
            ),
            collate_fn=RowCollate(
                m,
                None if len(row_ids) == m.shape[0] else row_ids,
                self.user_features if plan.rows == "users" and plan.features else None,
            ),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            progress=self._batches_done,
        )

    def _current_epoch(self) -> int | None:
        """The epoch of a running fit (restored from the checkpoint on resume); None when no
        fit is running, so a hand-driven loop's `set_epoch` counts."""
        trainer = getattr(self, "trainer", None)
        if trainer is None or trainer.state.status != TrainerStatus.RUNNING:
            return None
        return trainer.current_epoch

    def _batches_done(self) -> int:
        """Training batches of the current epoch the fit loop has trained (processed: a
        checkpoint written in on_train_batch_end, e.g. the periodic resume point, counts its
        batch as done, as Lightning's own loop does when it restores such a checkpoint)."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0
        return batches_processed(trainer)

    def _eval_loader(self, stage: str) -> DataLoader:
        target = self.val_matrix if stage == "val" else self.test_matrix
        return eval_loader(
            self.history(stage),
            target,
            self.eval_users_for(stage),
            self.user_features,
            self.eval_batch_size,
            self.num_workers,
        )

    def val_dataloader(self) -> DataLoader | list:
        return self._eval_loader("val") if self.val_matrix is not None else []

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")
