"""Lightning callbacks of advrec's own."""

from __future__ import annotations

from pathlib import Path

from lightning import Callback


class SaveOnInterrupt(Callback):
    """Writes `<dirpath>/<filename>.ckpt` when training dies (SIGTERM, Ctrl-C, an error).

    Together with the resumable training loader, `ckpt_path=last` then continues from that
    very batch. (Lightning's OnExceptionCheckpoint would also turn every `fit()` without
    `ckpt_path` into a resume attempt; this one only writes.)
    """

    def __init__(self, dirpath: str, filename: str = "last"):
        self.path = Path(dirpath) / f"{filename}.ckpt"

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if trainer.state.fn != "fit":
            return
        trainer.save_checkpoint(self.path, weights_only=False)
