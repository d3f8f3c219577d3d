"""Test-only callbacks, loadable from a Hydra override (+callbacks.kill=...)."""

import os
import signal

from lightning import Callback


class KillAt(Callback):
    """Sends this process SIGTERM after batch `at` of epoch `epoch` (a preempted job)."""

    def __init__(self, epoch: int, at: int):
        self.epoch, self.at = epoch, at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
