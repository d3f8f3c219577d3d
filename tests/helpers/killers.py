"""Test-only callbacks, loadable from a Hydra override (+callbacks.kill=...)."""

import os
import signal

import torch
from lightning import Callback


class KillAt(Callback):
    """Sends this process `sig` (SIGTERM: a preempted job; SIGKILL: a dead node) after batch
    `at` of epoch `epoch`."""

    def __init__(self, epoch: int, at: int, sig: str = "SIGTERM"):
        self.epoch, self.at, self.sig = epoch, at, getattr(signal, sig)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.at:
            os.kill(os.getpid(), self.sig)


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
