"""`Recommender`: the LightningModule every model extends; it owns evaluation.

Subclasses implement `score(users, history) -> (B, n_items)`, or `score_batch(batch)` when
they also read the users' encoded features (`batch["features"]`). Validation, test and predict
steps mask the user's known items (-inf) and feed one `RankingMetrics`, so every model is
measured by the same code. `ClosedForm` adds one-pass fitting with an optional
hyper-parameter grid chosen on the validation split (never on the test split).
"""

from __future__ import annotations

import itertools
import logging
import warnings
from collections.abc import Sequence

import scipy.sparse as sp
import torch
from lightning import LightningModule

from advrec.errors import AdvrecError
from advrec.metrics import RankingMetrics, topk_ranked

log = logging.getLogger(__name__)

# Noise that says nothing to an advrec user (closed-form models have no optimiser).
for _msg in (
    r".*configure_optimizers` returned `None`.*",
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
    r".*does not have many workers.*",
    r".*overridden `transfer_batch_to_device` in `LightningModule`.*",
    r".*The number of training batches .* is smaller than the logging interval.*",
):
    warnings.filterwarnings("ignore", message=_msg)


class Recommender(LightningModule):
    """Shared full-ranking evaluation; `rows` says whether training rows are users or items."""

    rows = "users"
    uses_features = False  # True: scores come from batch["features"] (can serve new users)

    def __init__(self, n_users: int, n_items: int, ks: Sequence[int] = (5, 10, 20)):
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.ks = sorted(int(k) for k in ks)
        self.val_metrics = RankingMetrics(self.ks, n_items=n_items)
        self.test_metrics = RankingMetrics(self.ks, n_items=n_items)
        self.run_config: dict | None = None  # the Hydra config, stored in checkpoints
        self.predict_k = 20
        self.refit_on: str | None = None  # "train+validation" once refit for the test
        self.data_identity: dict | None = None  # what it was trained on (DataModule.identity)
        self.status = "running"  # stored in checkpoints: running | interrupted (...) | final
        self.saved_status: str | None = None  # the status of the checkpoint it was loaded from
        self._skipped: torch.Tensor | None = None  # optimizer steps skipped by the AMP scaler

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
        self.val_metrics.update(self.masked_scores(batch), batch["target"])

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self.test_metrics.update(self.masked_scores(batch), batch["target"])

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
        metric.reset()

    @torch.no_grad()
    def recommend(self, batch: dict, k: int) -> dict:
        """Top-k unseen items per user, ranked exactly as the metrics rank them."""
        vals, idx = topk_ranked(self.masked_scores(batch), k)
        return {"users": batch["users"], "items": idx, "scores": vals}

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        return self.recommend(batch, self.predict_k)

    # -- manual optimisation (GANs) ------------------------------------------------------
    def manual_step(self, opt, loss_fn) -> tuple[torch.Tensor, dict]:
        """One update of the network `opt` owns. `loss_fn()` returns `(loss, stats)`;
        so does this method (stats are detached tensors for logging).

        `toggle_optimizer` freezes every other parameter while `loss_fn()` builds the graph,
        so G's loss never reaches D and vice versa. Clipping happens in
        `on_before_optimizer_step`, after the AMP scaler has unscaled the gradients, and steps
        the GradScaler skips (inf/NaN under 16-mixed) are counted without a host sync.
        """
        self.toggle_optimizer(opt)
        loss, stats = loss_fn()
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        before = None if scaler is None or scaler._scale is None else scaler._scale.clone()
        opt.step()
        if before is not None:  # the scale drops exactly when the scaler skipped the step
            skipped = (scaler._scale < before).sum()
            self._skipped = skipped if self._skipped is None else self._skipped + skipped
        self.untoggle_optimizer(opt)
        return loss.detach(), {k: v.detach() for k, v in stats.items()}

    def running_losses(self) -> dict[str, torch.Tensor]:
        """This epoch's losses so far, for models that log them only at the epoch's end (the
        divergence guard names a non-finite one)."""
        return {}

    def on_train_epoch_end(self) -> None:
        if self._skipped is not None:
            self.log("train/skipped_steps", self._skipped.float(), reduce_fx="sum", sync_dist=True)
            self._skipped = None

    @torch.no_grad()
    def evaluate(self, dm, stage: str = "val") -> dict[str, float]:
        """Metrics on `stage` of a DataModule outside the Trainer loops (grid selection)."""
        self.prepare_scoring(dm.history(stage))
        loader = dm.val_dataloader() if stage == "val" else dm.test_dataloader()
        metric = RankingMetrics(self.ks).to(self.device)
        for batch in loader:
            batch = self.transfer_batch_to_device(batch, self.device, 0)
            metric.update(self.masked_scores(batch), batch["target"])
        return {k: float(v) for k, v in metric.compute().items()}

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


class ClosedForm(Recommender):
    """A model fitted in one pass on the training matrix (no optimiser).

    `search` maps hyper-parameter names to candidate lists; every combination is fitted on
    train and scored on the validation split by `select_by` (e.g. `val/ndcg@10`), the best one
    is kept and recorded in `selection`. `refit(matrix)` fits the chosen one again (on train +
    validation under the validated protocol).
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
        self.search = {k: list(v) for k, v in (search or {}).items()}
        self.select_by = select_by
        self.selection: list[dict] = []

    # hyper-parameter -> (the rule in words, a test of one value): checked for the set value
    # and every searched candidate before anything is fitted
    limits: dict = {}

    def check_limits(self) -> None:
        for name, (rule, ok) in self.limits.items():
            for value in [self.hparams.get(name), *self.search.get(name, [])]:
                try:
                    good = bool(ok(float(value)))
                except (TypeError, ValueError):
                    good = False
                if not good:
                    raise AdvrecError(f"model.{name}={value!r}: it must be {rule}")

    def fit_matrix(self, matrix: sp.csr_matrix) -> None:
        """Fit the model's state on `matrix` (users x items) with the current hparams."""
        raise NotImplementedError

    def configure_optimizers(self):
        return None

    def training_step(self, batch: dict, batch_idx: int) -> None:
        return None

    def on_fit_start(self) -> None:
        dm = self.trainer.datamodule
        train = dm.train_matrix
        if self.search:
            self._select(train, dm)
        self.fit_matrix(train)

    def refit(self, matrix: sp.csr_matrix) -> None:
        self.fit_matrix(matrix)

    def _select(self, train: sp.csr_matrix, dm) -> None:
        if dm.val_matrix is None or not self.select_by:
            raise AdvrecError(
                f"model.search={self.search} needs a validation split to choose on; use "
                "protocol=validated (or drop model.search and fix the value)."
            )
        unknown = [k for k in self.search if k not in self.hparams]
        if unknown:
            raise AdvrecError(
                f"model.search names {unknown}, which {type(self).__name__} does not have; "
                f"its hyper-parameters: {sorted(self.hparams)}"
            )
        metric = self.select_by.removeprefix("val/")
        names = list(self.search)
        best = None
        for values in itertools.product(*self.search.values()):
            params = dict(zip(names, values, strict=True))
            self.hparams.update(params)
            self.fit_matrix(train)
            result = self.evaluate(dm, "val")
            if metric not in result:
                raise AdvrecError(f"select_by={self.select_by!r}: no such metric; {list(result)}")
            self.selection.append({**params, self.select_by: result[metric]})
            log.info("search %s -> %s = %.4f", params, self.select_by, result[metric])
            if best is None or result[metric] > best[1]:
                best = (params, result[metric])
        self.hparams.update(best[0])
        log.info("selected %s (%s = %.4f on validation)", best[0], self.select_by, best[1])
