"""`Recommender`: the LightningModule every model extends; it owns evaluation.

Subclasses implement `score(users, history) -> (B, n_items)`, or `score_batch(batch)` when
they also read the users' encoded features (`batch["features"]`). Validation, test and predict
steps mask the user's known items (-inf) and feed one `RankingMetrics`, so every model is
measured by the same code. A model declares the batches it trains on as a `Plan` and gets its
training data through `prepare_fit` (this class is the only one that reads the Trainer's
DataModule). `ClosedForm` fits in one pass on the training matrix; the protocol chooses its
hyper-parameters on the validation split (never on the test split).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch
from lightning import LightningModule

from advrec.data.batches import FitData, Phase, Plan
from advrec.errors import AdvrecError
from advrec.metrics import RankingMetrics, topk_ranked
from advrec.utils.callbacks import nonfinite_weights


def require_features(n_features: int, model: str, why: str) -> None:
    """One line for a model that reads user features on data that configures none."""
    if n_features == 0:
        raise AdvrecError(
            f"{model} {why}, and the data has none configured: use data=lastfm_coldstart "
            "(friends) or set data.features"
        )


class Recommender(LightningModule):
    """Shared full-ranking evaluation and the model's side of the data handshake."""

    rows = "users"  # a training row is a user (its items) or an item (its users)
    uses_features = False  # True: reads batch["features"] (and can serve new users)
    # True: scores a user from the batch's history row (a fold-in), not from a trained row of
    # theirs, so it serves users it never trained on from the items they reveal
    reads_history = False
    # what the constructor takes from the data beyond its shape (DataModule.model_kwargs):
    # "n_features" (the encoded features' width), "feature_blocks" (their columns)
    data_facts: tuple[str, ...] = ()

    def __init__(self, n_users: int, n_items: int, ks: Sequence[int] = (5, 10, 20)):
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.ks = sorted(int(k) for k in ks)
        self.val_metrics = RankingMetrics(self.ks, n_items=n_items, per_user=True)
        self.test_metrics = RankingMetrics(self.ks, n_items=n_items, per_user=True)
        # the last evaluation's per-user values by stage ("val", "test"): RankingMetrics'
        # per_user_values, gathered across processes (what per_user_<stage>.parquet holds)
        self.per_user: dict[str, dict] = {}
        self.run_config: dict | None = None  # the Hydra config, stored in checkpoints
        self.predict_k = 20  # how many items predict_step ranks (advrec-recommend's k)
        self.refit_on: str | None = None  # "train+validation" once refit for the test
        self.data_identity: dict | None = None  # what it was trained on (DataModule.identity)
        self.status = "running"  # stored in checkpoints: running | interrupted (...) | final
        self.saved_status: str | None = None  # the status of the checkpoint it was loaded from
        # True while scoring users it never saw (advrec-recommend's new users): batch["users"]
        # are then positions in the new users' file, not the data's users
        self.scoring_new_users = False

    # hyper-parameter -> (the rule in words, a test of one value): `check_limits` checks the
    # set value and every searched candidate (ClosedForm's `search`) before anything is fitted
    limits: dict = {}
    BATCH_SIZE = ("a whole number >= 1", lambda v: v >= 1 and v == int(v))

    def check_limits(self) -> None:
        """Refuse a value outside its model's `limits`, any non-finite number (`lam=inf`
        fits an all-NaN model) and a batch size below 1, naming the key and the rule.
        build_model calls it for every model; models that check in `__init__` fail earlier."""
        search = getattr(self, "search", None) or {}
        rules = dict(self.limits)
        for name in self.hparams:
            if "batch_size" in name and self.hparams[name] is not None:
                rules.setdefault(name, self.BATCH_SIZE)
        for name in {*self.hparams, *search}:
            for value in [self.hparams.get(name), *search.get(name, [])]:
                if isinstance(value, float) and not math.isfinite(value):
                    raise AdvrecError(f"model.{name}={value!r}: it must be a finite number")
        for name, widths in self.hparams.items():  # g_hidden, d_hidden, hidden: layer widths
            if name.endswith("hidden") and not _layer_widths(widths):
                raise AdvrecError(
                    f"model.{name}={widths!r}: it must be a whole number >= 1 or a list of "
                    "them (the widths of the hidden layers)"
                )
        for name, (rule, ok) in rules.items():
            for value in [self.hparams.get(name), *search.get(name, [])]:
                try:
                    good = bool(ok(float(value)))
                except (TypeError, ValueError):
                    good = False
                if not good:
                    raise AdvrecError(f"model.{name}={value!r}: it must be {rule}")

    # -- the data handshake ----------------------------------------------------------------
    def phases(self) -> tuple[Phase, ...] | None:
        """One epoch's training batches: one pass at the model's `batch_size` by default
        (None without one: one pass at `data.batch_size`)."""
        bs = self.hparams.get("batch_size")
        return None if bs is None else (Phase("train", int(bs)),)

    def plan(self) -> Plan:
        """The training batches this model needs; the DataModule builds its loader from it."""
        return Plan(self.rows, self.phases(), self.uses_features)

    def prepare_fit(self, data: FitData) -> None:
        """Hook run when a fit starts with the training data (models that need more than
        their batches, e.g. whole-matrix samplers, keep what they need here)."""

    def on_fit_start(self) -> None:
        self.prepare_fit(self.trainer.datamodule.fit_data(self.plan()))

    def fit_checked(self, matrix: sp.csr_matrix) -> None:
        """`fit_matrix` (closed forms; EASE-GAN's start), refused when the fitted state holds
        a NaN or inf (e.g. a solve that broke down): its scores, and every metric, would be
        arbitrary."""
        self.fit_matrix(matrix)
        bad = nonfinite_weights(self)
        bad += [k for k, m in (getattr(self, "sparse", None) or {}).items()
                if not np.isfinite(m.data).all()]  # fmt: skip
        if bad:
            settings = {k: v for k, v in self.hparams.items() if k not in ("n_users", "n_items")}
            raise AdvrecError(
                f"{type(self).__name__} fitted non-finite values ({', '.join(bad[:3])}) with "
                f"{settings}: its scores would be arbitrary; change those settings"
            )

    def score(self, users: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """Scores (B, n_items) for `users` given their dense `history` (B, n_items)."""
        raise NotImplementedError

    def prepare_scoring(self, history: sp.csr_matrix) -> None:
        """Hook run before an evaluation pass with the users' known history (users x items);
        models that score from whole-matrix state (e.g. item-based generators) build it here."""

    def score_batch(self, batch: dict) -> torch.Tensor:
        """Scores for an evaluation batch; override to read more than users and history."""
        return self.score(batch["users"], batch["history"])

    def masked_scores(self, batch: dict) -> torch.Tensor:
        scores = self.score_batch(batch).float()
        return scores.masked_fill(batch["history"] > 0, float("-inf"))

    # -- evaluation through the Trainer ----------------------------------------------------
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.val_metrics.update(self.masked_scores(batch), batch["target"], batch["users"])

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self.test_metrics.update(self.masked_scores(batch), batch["target"], batch["users"])

    def on_validation_epoch_start(self) -> None:
        self.prepare_scoring(self.trainer.datamodule.history("val"))

    def on_test_epoch_start(self) -> None:
        self.prepare_scoring(self.trainer.datamodule.history("test"))

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val", self.val_metrics)

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test", self.test_metrics)

    def _log_metrics(self, stage: str, metric: RankingMetrics) -> None:
        values = metric.compute()  # already reduced across processes
        self.log_dict({f"{stage}/{k}": v for k, v in values.items()}, sync_dist=False)
        self.per_user[stage] = metric.per_user_values
        metric.reset()

    @torch.no_grad()
    def recommend(self, batch: dict, k: int) -> dict:
        """Top-k unseen items per user, ranked exactly as the metrics rank them."""
        vals, idx = topk_ranked(self.masked_scores(batch), k)
        return {"users": batch["users"], "items": idx, "scores": vals}

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        return self.recommend(batch, self.predict_k)

    def transfer_batch_to_device(self, batch: dict, device, dataloader_idx: int) -> dict:
        if device.type == "cpu":  # nothing to move; skip Lightning's generic traversal
            return batch
        return {
            k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
            for k, v in batch.items()
        }

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["advrec_config"] = self.run_config
        checkpoint["advrec_refit_on"] = self.refit_on
        checkpoint["advrec_data"] = self.data_identity
        checkpoint["advrec_status"] = self.status

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.run_config = checkpoint.get("advrec_config")
        self.refit_on = checkpoint.get("advrec_refit_on")
        self.data_identity = checkpoint.get("advrec_data")
        self.saved_status = checkpoint.get("advrec_status")

    def carry_run_state(self, other: Recommender) -> Recommender:
        """Give `other` (e.g. the refit copy) this model's run config and data identity."""
        other.run_config, other.data_identity = self.run_config, self.data_identity
        return other


class GridSearchable:
    """A model with a grid the protocol chooses on before training (`protocol.grid_search`):
    `search` maps hyper-parameter names to candidate lists; every combination is fitted on
    train (`fit_checked(matrix)`), scored on the validation split by `select_by` (e.g.
    `val/ndcg@10`), the best kept and each recorded in `selection`. `only`: the names a grid
    may hold (None: any hyper-parameter)."""

    def init_search(
        self, search: dict | None, select_by: str | None, only: set | None = None, why: str = ""
    ) -> None:
        self.search = {k: list(v) for k, v in (search or {}).items()}
        if only is not None and set(self.search) - only:
            raise AdvrecError(f"model.search={dict(self.search)}: {why}")
        self.select_by = select_by
        self.selection: list[dict] = []


class ClosedForm(GridSearchable, Recommender):
    """A model fitted in one pass on the training matrix (no optimiser, no training batches).
    Its grid (`search`, see `GridSearchable`) is chosen on validation; `refit(matrix)` fits
    the chosen one again (on train + validation under the validated protocol).
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        ks: Sequence[int] = (5, 10, 20),
        search: dict | None = None,
        select_by: str | None = "val/ndcg@10",
    ):
        super().__init__(n_users, n_items, ks)
        self.automatic_optimization = False
        self.init_search(search, select_by)

    def phases(self) -> tuple[Phase, ...]:
        return ()

    def fit_matrix(self, matrix: sp.csr_matrix) -> None:
        """Fit the model's state on `matrix` (users x items) with the current hparams."""
        raise NotImplementedError

    def configure_optimizers(self):
        return None

    def training_step(self, batch: dict, batch_idx: int) -> None:
        return None

    def prepare_fit(self, data: FitData) -> None:
        self.take_data(data)
        self.fit_checked(data.train)

    def take_data(self, data: FitData) -> None:
        """Keep what `fit_matrix` needs beyond the matrix (GroupPop: the users' features);
        called when a fit starts and before the protocol's grid search fits candidates."""

    def refit(self, matrix: sp.csr_matrix) -> None:
        self.fit_checked(matrix)


def _layer_widths(value) -> bool:
    """One whole number >= 1 (a model with one hidden layer, e.g. the skeleton in
    docs/adding-a-model.md) or a list of them (empty: no hidden layer)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    try:
        return all(float(w) == int(w) >= 1 for w in value)
    except (TypeError, ValueError):
        return False
