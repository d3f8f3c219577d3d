"""What a fit shows while it runs: a progress bar with the monitored validation metric in a
terminal, one line per validation check (or per few refit epochs) in a log file."""

from __future__ import annotations

import math
import time

from lightning import Callback
from lightning.pytorch.callbacks import RichProgressBar


def clock(seconds: float) -> str:
    """0:07, 12:05, 1:02:05."""
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def _monitor(trainer) -> tuple[str | None, str]:
    """The metric the checkpoint callback selects on and its mode (max or min)."""
    ckpt = trainer.checkpoint_callback
    if ckpt is None or not getattr(ckpt, "monitor", None):
        return None, "max"
    return ckpt.monitor, ckpt.mode


class ProgressBar(RichProgressBar):
    """Lightning's rich bar with the monitored validation metric and the best value so far
    instead of the logger's version number, epochs counted from 1; narrow enough for an
    80-column terminal (the training losses join from 120 columns on)."""

    WIDE = 120

    def configure_columns(self, trainer) -> list:
        from rich.progress import TimeRemainingColumn

        description, bar, batches, _, _ = super().configure_columns(trainer)
        bar.bar_width = 10  # rich's default 40 (and elapsed time, it/s) wrap the metrics
        return [description, bar, batches, TimeRemainingColumn()]

    def _get_train_description(self, current_epoch: int) -> str:
        """`Epoch 5/60` counted from 1, as the log lines and metrics.json count."""
        total = self.trainer.max_epochs
        text = f"Epoch {current_epoch + 1}" + (f"/{total}" if total and total > 0 else "")
        return f"{text:{len(self.validation_description)}}"

    def get_metrics(self, trainer, pl_module) -> dict:
        shown = super().get_metrics(trainer, pl_module)
        shown.pop("v_num", None)
        console = getattr(self, "_console", None)
        if console is None or console.width < self.WIDE:
            shown = {}
        monitor, _ = _monitor(trainer)
        value = trainer.callback_metrics.get(monitor) if monitor else None
        if value is not None:
            best = trainer.checkpoint_callback.best_model_score
            shown = {monitor: f"{float(value):.4f}", **shown}
            if best is not None:
                shown = {monitor: shown[monitor], "best": f"{float(best):.4f}", **shown}
        return shown


class ProgressLines(Callback):
    """One line per validation check on stdout, for runs nobody watches in a terminal
    (batch jobs, SLURM, `> log`): model, epoch, the monitored metric, the best so far and its
    epoch, the epoch's training losses, elapsed time and the time left (at most, when early
    stopping may end the fit sooner). A fit without validation (the refit, protocol=original)
    gets a line every `check_val_every_n_epoch` epochs. The best so far is saved with
    checkpoints, so a resumed run keeps it.

    An epoch's line is printed when the next epoch starts (or training ends): models log
    their epoch losses in their own `on_train_epoch_end`, which Lightning calls after this
    callback's. A check within an epoch (protocol.check_every=pass) prints at once."""

    def __init__(self) -> None:
        self.best: float | None = None
        self.best_epoch: int | None = None
        self._start = time.monotonic()
        self._first_epoch = 0
        self._pending: tuple[list[str], int] | None = None

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best, self.best_epoch = state_dict.get("best"), state_dict.get("best_epoch")

    def on_train_start(self, trainer, pl_module) -> None:
        self._start = time.monotonic()
        self._first_epoch = trainer.current_epoch

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        monitor, mode = _monitor(trainer)
        value = trainer.callback_metrics.get(monitor) if monitor else None
        parts = []
        if value is not None:
            value = float(value)
            gain = value - self.best if self.best is not None else math.inf
            better = gain > 0 if mode == "max" else gain < 0 or self.best is None
            if better and math.isfinite(value):
                self.best, self.best_epoch = value, trainer.current_epoch + 1
            parts.append(f"{monitor} {value:.4f}")
            if self.best is not None:
                parts.append(f"best {self.best:.4f} (epoch {self.best_epoch})")
        self._pending = (parts, trainer.current_epoch + 1)
        if not trainer.is_last_batch:  # a check within the epoch: its losses are not in yet
            self._flush(trainer, pl_module, losses=False)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.limit_val_batches != 0:  # a fit that validates reports at each check
            return
        done = trainer.current_epoch + 1
        every = max(1, int(trainer.check_val_every_n_epoch or 1))
        if done % every == 0 or done == trainer.max_epochs:
            self._pending = ([], done)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._flush(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._flush(trainer, pl_module)

    def _flush(self, trainer, pl_module, losses: bool = True) -> None:
        pending, self._pending = self._pending, None
        if pending is None or not trainer.is_global_zero:
            return
        parts, done = pending
        elapsed = time.monotonic() - self._start
        total = trainer.max_epochs if (trainer.max_epochs or 0) > 0 else None
        line = [f"[{type(pl_module).__name__}] epoch {done}" + (f"/{total}" if total else "")]
        line += parts
        logged = trainer.callback_metrics.items() if losses else ()
        shown = {  # the epoch's training losses, as logged (train/g_loss -> g_loss)
            k.split("/", 1)[1]: float(v)
            for k, v in logged
            if k.startswith("train/") and k.endswith("loss")
        }
        line += [f"{k} {v:.4g}" for k, v in sorted(shown.items())]
        line.append(f"elapsed {clock(elapsed)}")
        ran = done - self._first_epoch
        if total and ran > 0 and done < total:
            left = elapsed / ran * (total - done)
            bound = "<= " if trainer.early_stopping_callback is not None else ""
            line.append(f"left {bound}{clock(left)}")
        print("  ".join(line), flush=True)
