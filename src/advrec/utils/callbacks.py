"""Lightning callbacks of advrec's own: resume points and the divergence guard."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from lightning import Callback

from advrec.errors import AdvrecError, Diverged
from advrec.utils.compat import total_batches

log = logging.getLogger(__name__)


def nonfinite_weights(module: torch.nn.Module) -> list[str]:
    """Names of the module's parameters and floating buffers that hold a NaN or inf."""
    named = [*module.named_parameters(), *module.named_buffers()]
    tensors = [(n, t) for n, t in named if t.is_floating_point()]
    if not tensors or bool(torch.stack([t.isfinite().all() for _, t in tensors]).all()):
        return []  # one host sync for the whole model
    return [n for n, t in tensors if not t.isfinite().all()]


def nonfinite(pl_module) -> tuple[dict, list[str]]:
    """The module's non-finite running losses (`running_losses()`, logged `train/*` values;
    not under a GradScaler, which skips inf steps by design) and non-finite weights."""
    trainer = pl_module.trainer
    logged = trainer.callback_metrics.items()
    values = {k: torch.as_tensor(v) for k, v in logged if k.startswith("train/")}
    running = getattr(pl_module, "running_losses", dict)()  # GANs keep epoch sums on the device
    values.update({k: torch.as_tensor(v) for k, v in running.items()})
    losses = {k: float(v) for k, v in values.items() if not torch.isfinite(v).all()}
    if getattr(trainer.precision_plugin, "scaler", None) is not None:
        losses = {}  # 16-mixed: the scaler skips inf steps by design; the weights decide
    return losses, nonfinite_weights(pl_module)


class DivergenceGuard(Callback):
    """Stops training with `Diverged` once a loss or a weight is NaN/inf.

    Checked when an epoch's training ends and before each validation, i.e. before any
    checkpoint of that state is written (Lightning runs checkpoint callbacks last), so the
    last checkpoint on disk is the last good state. Always on: advrec adds it to every fit.
    """

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self.check(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.check(trainer, pl_module)

    def check(self, trainer, pl_module) -> None:
        losses, params = nonfinite(pl_module)
        if not losses and not params:
            return
        what = [f"{k}={v}" for k, v in sorted(losses.items())]
        if params:
            shown = ", ".join(params[:3]) + (
                f" and {len(params) - 3} more" if len(params) > 3 else ""
            )
            what.append(f"non-finite weights in {shown}")
        ckpt = _last_good(trainer)
        kept = f"the last good checkpoint is {ckpt}" if ckpt else "no checkpoint was written yet"
        raise Diverged(
            f"training diverged in epoch {trainer.current_epoch + 1}: {'; '.join(what)}. "
            f"Nothing was tested and no metrics.json written; {kept}. Lower the learning rates "
            "(model.lr*) or use precision 32-true"
        )


def _last_good(trainer) -> str | None:
    paths = [getattr(cb, "best_model_path", "") for cb in trainer.checkpoint_callbacks]
    paths += [str(cb.path) for cb in trainer.callbacks if isinstance(cb, ResumePoint) and cb.saved]
    existing = [p for p in paths if p and Path(p).is_file()]
    return max(existing, key=lambda p: Path(p).stat().st_mtime) if existing else None


class ResumePoint(Callback):
    """Keeps `<dirpath>/<filename>.ckpt` a point a killed run can resume from, and the only
    one: always the newest state written (nothing else writes a `last` checkpoint).

    Written every `every_minutes` of training (and/or every `every_batches` batches), so a
    SIGKILL or a dead node loses at most that much; when training is interrupted (SIGTERM,
    Ctrl-C, a crash) after at least one batch was trained; and when training ends (`at_end`:
    a finished run can be trained further with a larger `trainer.max_epochs`). Never written
    for a run that failed before training started, nor after an advrec error (divergence, a
    full disk). Its checkpoints are marked `advrec_status: interrupted (...)`, `running` or
    `end of training`; advrec-eval says they are not the tested model (that is final.ckpt).
    Resume with `advrec-train <same overrides> hydra.run.dir=<run dir> ckpt_path=last`.
    """

    def __init__(
        self,
        dirpath: str,
        filename: str = "last",
        every_minutes: float | None = 10.0,
        every_batches: int | None = None,
        at_end: bool = True,
    ):
        for key, value, ok, rule in (
            ("every_minutes", every_minutes, _positive_or_none(float), "a number > 0 or null"),
            ("every_batches", every_batches, _positive_or_none(int), "a whole number >= 1 or null"),
            ("at_end", at_end, lambda v: isinstance(v, bool), "true or false"),
        ):
            if not ok(value):
                raise AdvrecError(f"callbacks.resume_point.{key}={value!r}: it must be {rule}")
        self.path = Path(dirpath) / f"{filename}.ckpt"
        self.every_minutes, self.every_batches = every_minutes, every_batches
        self.at_end = at_end
        self.trained = False  # a batch of this fit was trained
        self.saved = False
        self._since = time.monotonic()

    def on_train_start(self, trainer, pl_module) -> None:
        self._since = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.trained = True
        n = total_batches(trainer)
        due = bool(self.every_batches) and n % int(self.every_batches) == 0
        if self.every_minutes and n % 20 == 0:  # ranks must agree: rank 0's clock decides
            late = time.monotonic() - self._since >= 60 * float(self.every_minutes)
            due = due or bool(trainer.strategy.broadcast(late, src=0))
        if due:
            DivergenceGuard().check(trainer, pl_module)  # never a diverged resume point
            self._save(trainer, "running")

    def on_train_end(self, trainer, pl_module) -> None:
        if self.at_end and self.trained:
            DivergenceGuard().check(trainer, pl_module)
            self._save(trainer, "end of training")

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        # an advrec error (divergence, a full disk, a bad setting) leaves nothing worth resuming
        if trainer.state.fn != "fit" or not self.trained or isinstance(exception, AdvrecError):
            return
        try:
            self._save(trainer, f"interrupted ({type(exception).__name__})")
        except Exception as e:  # never hide the error that stopped the run
            log.error("could not write the resume point %s: %s", self.path, e)

    def _save(self, trainer, status: str) -> None:
        pl_module = trainer.lightning_module
        previous, pl_module.status = pl_module.status, status
        try:
            trainer.save_checkpoint(self.path, weights_only=False)
        finally:
            pl_module.status = previous
        self.saved = True
        self._since = time.monotonic()


def _positive_or_none(kind: type):
    """A test: None, or a positive number of `kind` (bool is not a number here)."""
    allowed = (int, float) if kind is float else (int,)
    return lambda v: v is None or (isinstance(v, allowed) and not isinstance(v, bool) and v > 0)
