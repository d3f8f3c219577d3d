"""Protocols: how a run chooses its model and when it touches the test split.

`conf/protocol/<name>.yaml` is one `Protocol`:

- `validated`: validation carved out of train; hyper-parameters and the epoch chosen on it;
  then the model is refit on train + validation with the chosen settings and the chosen
  number of epochs (`refit: all`, the ECIR 2022 protocol) and the test split is touched once.
  `refit: closed_form` refits only closed-form models, `refit: none` tests
  the selected model as it was fitted on train minus validation.
- `original`: a paper's own procedure: fixed settings, the last epoch, no validation
  (optimistic: those settings were published after looking at the test split).
- `test_selected`: released code that kept the checkpoint with the best *test* score; the
  "validation" loop runs on the test split (optimistic). `check_every: pass` checks after
  every pass over the rows (IRGAN's code evaluates after each of its 50 G epochs per round).

`run` is the whole procedure: fit -> select -> re-validate -> refit -> test once.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lightning import Trainer, seed_everything
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig

from advrec.data.batches import Plan
from advrec.data.datamodule import RecDataModule
from advrec.errors import AdvrecError
from advrec.models.base import ClosedForm, GridSearchable, Recommender
from advrec.utils.io import read_checkpoint

log = logging.getLogger(__name__)

REFITS = ("all", "closed_form", "none")
CHECKS = ("epoch", "pass")


@dataclass
class Protocol:
    name: str
    optimistic: bool
    val_fraction: float = 0.0
    val_on_test: bool = False
    monitor: str | None = None
    patience: int = 0
    refit: str = "none"
    check_every: str = "epoch"
    test: bool = True  # False: stop after validation (search trials never see the test split)

    @classmethod
    def from_config(cls, node: DictConfig) -> Protocol:
        fields = {k: node.get(k) for k in cls.__dataclass_fields__ if node.get(k) is not None}
        refit = fields.get("refit", "none")
        if isinstance(refit, bool):  # an older spelling: refit=true / false
            fields["refit"] = "closed_form" if refit else "none"
        p = cls(**fields)
        if p.refit not in REFITS:
            raise AdvrecError(f"protocol.refit={p.refit!r}: choose one of {REFITS}")
        if p.check_every not in CHECKS:
            raise AdvrecError(f"protocol.check_every={p.check_every!r}: choose one of {CHECKS}")
        if p.refit != "none" and p.val_fraction <= 0:
            raise AdvrecError(
                f"protocol.refit={p.refit} refits on train + validation, but "
                f"protocol.val_fraction={p.val_fraction} carves out no validation; "
                "set protocol.val_fraction (e.g. 0.1) or protocol.refit=none"
            )
        return p

    @property
    def selects(self) -> bool:
        """Whether a monitored metric picks the checkpoint that is tested."""
        return bool(self.monitor)

    def keeps_callback(self, target: str) -> bool:
        """Early stopping needs a monitored metric and a patience; a checkpoint of the
        selected model needs a selection (without one the last epoch is tested)."""
        name = target.rsplit(".", 1)[-1]
        if name == "EarlyStopping":
            return self.selects and self.patience > 0
        if name == "ModelCheckpoint":
            return self.selects
        return True

    def refits(self, model: Recommender) -> bool:
        closed = isinstance(model, ClosedForm)
        return self.refit == "all" or (self.refit == "closed_form" and closed)

    def trainer_overrides(self, model: Recommender, dm: RecDataModule) -> dict:
        """What the protocol and the model's kind impose on the Trainer."""
        out: dict = {}
        if dm.val_matrix is None:
            out["limit_val_batches"] = 0  # nothing to validate on (protocol=original)
        if isinstance(model, ClosedForm):  # fitted from the matrix when the fit starts
            out.update(max_epochs=1, max_steps=-1, limit_train_batches=0)
        elif self.check_every == "pass":
            interval = batches_per_pass(dm, model.plan())
            out.update(val_check_interval=interval, check_val_every_n_epoch=1)
        return out

    # -- the procedure ------------------------------------------------------------------------
    def run(
        self,
        model: Recommender,
        dm: RecDataModule,
        trainer: Trainer,
        *,
        seed: int,
        output_dir: str | Path,
        make_trainer: Callable[..., Trainer],
        make_eval_trainer: Callable[[], Trainer],
        ckpt_path: str | None = None,
        refit_overrides: dict | None = None,
    ):
        """Fit, select on validation, refit if asked, test once. Returns a `Result`.
        `ckpt_path` resumes the fit; the refit reseeds with `seed` and logs under
        `output_dir`; `refit_overrides` replace hyper-parameters of the refit (e.g. its
        `init_ckpt`); `make_trainer(**overrides)` builds the refit's trainer,
        `make_eval_trainer()` the one a grid scores its candidates with (the protocol never
        builds trainers itself, so it needs no config and imports no builder)."""
        if self.selects and dm.val_matrix is None:
            raise AdvrecError(
                f"protocol.val_fraction={self.val_fraction} left no validation interactions "
                f"({dm.describe()['n_train']} training interactions), so {self.monitor} cannot "
                "choose the model; raise protocol.val_fraction or use protocol=original"
            )
        closed = isinstance(model, ClosedForm)
        if isinstance(model, GridSearchable) and model.search:  # closed forms; EASE-GAN's start
            grid_search(model, dm, make_eval_trainer())
        # a resumed checkpoint is read as data only (unpickling anything else can run code)
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
        if not closed and trainer.global_step == 0:
            raise AdvrecError(
                f"{type(model).__name__} took no training step (trainer.max_epochs="
                f"{trainer.max_epochs}, {trainer.num_training_batches} training batches an "
                "epoch): it never trained, so nothing of it is tested or saved; give it "
                "training batches and epochs"
            )
        # a closed-form fit is one pass over the matrix
        res = Result(model=model, epochs=1 if closed else int(trainer.current_epoch))
        res.selection = list(getattr(model, "selection", []))
        cls = type(model)
        del model  # from here `res.model` is the one model this run holds
        if dm.val_matrix is not None:
            ckpt = trainer.checkpoint_callback
            best = ckpt.best_model_path if (ckpt is not None and self.selects) else ""
            if best:
                res.selected_checkpoint = best
                state = read_checkpoint(Path(best), mmap=True)  # two numbers, not the weights
                res.selected_epoch = int(state["epoch"]) + 1
                res.selected_step = int(state["global_step"])
                del state
                release(trainer)  # the fitted model and its optimizer state go first
                res.model = None
                res.model = cls.load_from_checkpoint(best, weights_only=True)
            res.val = trainer.validate(res.model, datamodule=dm, verbose=False)[0]
            res.per_user["val"] = res.model.per_user.get("val")
        if res.selected_epoch is None and not closed:
            res.selected_epoch = res.epochs  # the last epoch (nothing was selected)
        if self.refits(res.model):
            res.model = self._refit(
                res, dm, trainer, refit_overrides or {}, make_trainer, seed, output_dir
            )
            res.refit = "train+validation"
        if self.test:
            res.test = trainer.test(res.model, datamodule=dm, verbose=False)[0]
            res.per_user["test"] = res.model.per_user.get("test")
        elif trainer.lightning_module is not res.model:
            trainer.strategy.connect(res.model)  # the model final.ckpt must hold
        return res

    def _refit(
        self,
        res: Result,
        dm: RecDataModule,
        trainer: Trainer,
        overrides: dict,
        make_trainer: Callable[..., Trainer],
        seed: int,
        output_dir: str | Path,
    ) -> Recommender:
        """The chosen model's settings trained again on train + validation (same seed).
        The chosen model is let go before the refit trains: one model's weights at a time."""
        chosen = res.model
        if isinstance(chosen, ClosedForm):
            chosen.refit(dm.train_full_matrix)
            chosen.refit_on = "train+validation"
            return chosen
        seed_everything(seed, workers=True, verbose=False)
        model = _fresh_copy(chosen, overrides)
        res.model = chosen = None
        release(trainer)  # validation connected the chosen model
        full = dm.with_validation_in_train()
        trainer = make_trainer(
            max_epochs=res.selected_epoch,
            max_steps=-1,
            callbacks=[],
            enable_checkpointing=False,
            logger=CSVLogger(str(output_dir), name="csv", version="refit"),
            limit_val_batches=0,
        )
        n = res.selected_epoch
        log.info("refit on train + validation for %d epoch%s", n, "s" if n != 1 else "")
        trainer.fit(model, datamodule=full)
        model.refit_on = "train+validation"
        return model


@dataclass
class Result:
    model: Recommender
    epochs: int  # epochs the selection fit ran (early stopping may cut it short)
    val: dict | None = None
    test: dict | None = None
    selection: list | None = None  # a closed-form model's grid: every candidate's score
    selected_checkpoint: str | None = None
    selected_epoch: int | None = None  # epochs trained by the selected (or last) model
    selected_step: int | None = None
    refit: str | None = None  # what the tested model was refit on, if it was
    # the tested (and the selected) model's per-user values by split (RankingMetrics')
    per_user: dict = field(default_factory=dict)

    def metrics(self) -> dict:
        """Validation and test metrics, the tested model's hyper-parameters and `record()`."""
        scores = {**(self.val or {}), **(self.test or {})}
        hparams = self.model.hparams.items()
        return {
            **{k: float(v) for k, v in sorted(scores.items())},
            "hparams": {k: v for k, v in hparams if k not in ("n_users", "n_items")},
            "selection": self.selection,
            **self.record(),
        }

    def record(self) -> dict:
        return {
            "selected_epoch": self.selected_epoch,
            "selected_step": self.selected_step,
            "refit": self.refit,
            "selected_checkpoint": self.selected_checkpoint,
            "epochs": self.epochs,
        }


def _fresh_copy(chosen: Recommender, overrides: dict) -> Recommender:
    """A new model with `chosen`'s settings (and `overrides`) and run state. Built in a frame
    of its own: Lightning's save_hyperparameters snapshots the locals of the frame that calls
    a constructor, and that snapshot would keep `chosen` alive through the refit."""
    return chosen.carry_run_state(type(chosen)(**{**dict(chosen.hparams), **overrides}))


def release(trainer: Trainer) -> None:
    """The trainer lets go of the model it last fitted or evaluated and of the optimizers
    (and their state) its fit made; a later fit, validate or test connects its own."""
    trainer.strategy.optimizers = []
    trainer.strategy.lr_scheduler_configs = []
    trainer.strategy.connect(None)
    trainer._data_connector._datahook_selector = None  # Lightning's: reset by every run
    for cb in trainer.callbacks:  # the module's log methods, attached again by every run
        cb.log = cb.log_dict = None


def grid_search(model: GridSearchable, dm: RecDataModule, trainer: Trainer) -> None:
    """Fit every combination of `model.search` on train, validate each with `trainer` (the
    metrics every run reports), keep the best by `model.select_by`; each candidate's score
    goes to `model.selection`: a `ClosedForm`, or a trained model whose start is one
    (EASE-GAN)."""
    if dm.val_matrix is None or not model.select_by:
        raise AdvrecError(
            f"model.search={model.search} needs a validation split to choose on; use "
            "protocol=validated (or drop model.search and fix the value)."
        )
    unknown = [k for k in model.search if k not in model.hparams]
    if unknown:
        raise AdvrecError(
            f"model.search names {unknown}, which {type(model).__name__} does not have; "
            f"its hyper-parameters: {sorted(model.hparams)}"
        )
    if isinstance(model, ClosedForm):  # what its fits read beyond the matrix (features)
        model.take_data(dm.fit_data(model.plan()))
    key = model.select_by
    metric = key if key.startswith("val/") else f"val/{key}"
    names, best = list(model.search), None
    for values in itertools.product(*model.search.values()):
        params = dict(zip(names, values, strict=True))
        model.hparams.update(params)
        model.fit_checked(dm.train_matrix)
        result = trainer.validate(model, datamodule=dm, verbose=False)[0]
        if metric not in result:
            raise AdvrecError(f"select_by={key!r}: no such metric; {sorted(result)}")
        model.selection.append({**params, key: result[metric]})
        log.info("search %s -> %s = %.4f", params, key, result[metric])
        if best is None or result[metric] > best[1]:
            best = (params, result[metric])
    model.hparams.update(best[0])
    log.info("selected %s (%s = %.4f on validation)", best[0], key, best[1])


def batches_per_pass(dm: RecDataModule, plan: Plan) -> int:
    """Training batches in one pass over the rows, when every pass has the same count."""
    plan = dm.plan_of(plan)
    n = len(dm.train_rows(plan.rows))
    sizes = {math.ceil(n / p.batch_size) for p in plan.phases if p.passes > 0}
    if len(sizes) != 1:
        raise AdvrecError(
            "protocol.check_every=pass needs passes of one length, but the model's phases "
            f"use batch sizes {[p.batch_size for p in plan.phases]}; use "
            "protocol.check_every=epoch"
        )
    return sizes.pop()
