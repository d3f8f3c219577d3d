"""Test-only callbacks, loadable from a Hydra override (+callbacks.kill=...)."""

import os
import signal

import torch
from lightning import Callback


class KillAt(Callback):
    """Sends this process `sig` (SIGTERM: a preempted job; SIGKILL: a dead node; SIGINT:
    Ctrl-C) after batch `at` of epoch `epoch`, or when a fit starts (`epoch: null`); in a
    multirun only in job number `job` when that is set."""

    def __init__(self, epoch: int | None, at: int = 0, sig: str = "SIGTERM", job=None):
        self.epoch, self.at, self.sig, self.job = epoch, at, getattr(signal, sig), job

    def _kill(self) -> None:
        if self.job is not None:
            from hydra.core.hydra_config import HydraConfig

            if HydraConfig.get().job.num != self.job:
                return
        os.kill(os.getpid(), self.sig)

    def on_fit_start(self, trainer, pl_module):
        if self.epoch is None:
            self._kill()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.at:
            self._kill()


class PoisonAt(Callback):
    """Turns the model's first parameter into NaN after batch `at` of epoch `epoch` (what a
    diverging optimiser does, deterministically)."""

    def __init__(self, epoch: int, at: int = 0):
        self.epoch, self.at = epoch, at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.at:
            with torch.no_grad():
                next(pl_module.parameters()).fill_(float("nan"))


class RaiseAt(Callback):
    """Raises a RuntimeError when training starts (`at: null`) or after batch `at`."""

    def __init__(self, at: int | None = None):
        self.at = at

    def on_train_start(self, trainer, pl_module):
        if self.at is None:
            raise RuntimeError("failed before training")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == self.at:
            raise RuntimeError("failed mid-training")
