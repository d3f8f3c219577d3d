"""A trained run's checkpoint read back: the model, the config it stored, and its data
rebuilt and checked to be the data it was trained on (advrec-eval, advrec-recommend)."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from advrec.data.datamodule import RecDataModule
from advrec.errors import AdvrecError
from advrec.models.base import Recommender
from advrec.run.build import build_datamodule
from advrec.run.guards import check_targets, model_class
from advrec.utils.callbacks import nonfinite_weights
from advrec.utils.io import read_checkpoint

log = logging.getLogger(__name__)


def load_checkpoint(ckpt_path: str | Path, entry: DictConfig) -> tuple[Recommender, DictConfig]:
    """A trained model plus the training config it stored, with the entry point's `paths`
    and any `data` overrides (e.g. `+data.source.path=<where the file moved>`)."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise AdvrecError(
            f"checkpoint not found: {path}. advrec-train writes "
            "<run dir>/checkpoints/final.ckpt; pass ckpt_path=<that file>."
        )
    raw = read_checkpoint(path)
    stored = raw.get("advrec_config") if isinstance(raw, dict) else None
    if stored is None:
        raise AdvrecError(f"{path} was not written by advrec-train (no advrec_config inside)")
    cfg = OmegaConf.create(stored)
    with open_dict(cfg):
        cfg.paths = entry.paths
        if entry.get("data"):
            cfg.data = OmegaConf.merge(cfg.data, entry.data)
    # what is instantiated from it: the model and the data source (callbacks never are)
    used = OmegaConf.masked_copy(cfg, ["model", "data"])
    check_targets(used, entry.get("allow_targets") or (), where=f"the config stored in {path}")
    model = model_class(cfg).load_from_checkpoint(path, map_location="cpu", weights_only=True)
    model.eval()
    bad = nonfinite_weights(model)
    if bad:
        raise AdvrecError(
            f"{path} has non-finite weights ({', '.join(bad[:3])}): the run diverged; its "
            "scores and rankings would be arbitrary, so it is not used"
        )
    status = model.saved_status or "final"
    if status != "final":
        log.warning(
            "%s is a mid-run checkpoint (%s, saved in epoch %s), not a run's tested model: its "
            "scores are not the run's result (that model is checkpoints/final.ckpt)",
            path,
            status,
            int(raw.get("epoch", -1)) + 1,
        )
    return model, cfg


def checked_datamodule(run_cfg: DictConfig, model: Recommender, ckpt: str | Path) -> RecDataModule:
    """The checkpoint's data and split rebuilt, refused unless they are the ones it was
    trained on."""
    hint = (
        f"{ckpt} was trained on it; if the file moved, point to it with "
        "+data.source.path=<file> (or paths.data_dir=<folder>)"
    )
    try:
        dm = build_datamodule(run_cfg)
    except AdvrecError as e:
        raise AdvrecError(f"{e} ({hint})") from None
    dm.check_identity(model.data_identity, str(ckpt))
    return dm
