"""What the entry points share: build the DataModule, model and Trainer from a config; load a
checkpoint with the config it was trained with."""

from __future__ import annotations

import inspect
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from lightning import Callback, Trainer
from lightning.pytorch.loggers import Logger
from lightning.pytorch.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, OmegaConf, open_dict

from advrec.data.datamodule import RecDataModule
from advrec.errors import AdvrecError
from advrec.models.base import Recommender
from advrec.utils.io import read_checkpoint

log = logging.getLogger(__name__)


def model_class(cfg: DictConfig) -> type[Recommender]:
    target = cfg.model.get("_target_")
    try:
        cls = get_class(target)
    except Exception as e:
        raise AdvrecError(f"model._target_={target!r} cannot be imported: {e}") from None
    if not issubclass(cls, Recommender):
        raise AdvrecError(f"model._target_={target!r} is not an advrec Recommender")
    return cls


def check_settings(cfg: DictConfig) -> None:
    """Values every run needs in range, each refused with the range it must lie in."""
    ks = cfg.get("ks")
    try:
        good = bool(ks) and all(int(k) == k and k >= 1 for k in ks)
    except (TypeError, ValueError):
        good = False
    if not good:
        raise AdvrecError(f"ks={ks}: give a non-empty list of cut-offs >= 1, e.g. ks=[5,10,20]")
    seed = cfg.get("seed")
    if not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise AdvrecError(f"seed={seed!r}: it must be a whole number in [0, 2^32)")
    for key in ("batch_size", "eval_batch_size"):
        value = cfg.data.get(key)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise AdvrecError(f"data.{key}={value!r}: it must be a whole number >= 1")


def build_datamodule(cfg: DictConfig, rows: str = "users") -> RecDataModule:
    d = cfg.data
    dm = RecDataModule(
        source=d.source,
        split=OmegaConf.to_container(d.split, resolve=True),
        val_fraction=cfg.protocol.val_fraction,
        val_on_test=cfg.protocol.get("val_on_test", False),
        rows=rows,
        batch_size=d.batch_size,
        eval_batch_size=d.eval_batch_size,
        eval_users=d.get("eval_users", "all"),
        num_workers=d.get("num_workers", 0),
        seed=cfg.seed,
        cache_dir=cfg.paths.cache_dir,
        name=d.name,
        features=_container(d.get("features")),
    )
    dm.setup()
    return dm


def _container(node):
    return OmegaConf.to_container(node, resolve=True) if node is not None else None


def build_model(cfg: DictConfig, dm: RecDataModule) -> Recommender:
    cls = model_class(cfg)
    if max(cfg.ks) > dm.n_items:
        raise AdvrecError(
            f"ks={list(cfg.ks)} exceeds the catalogue ({dm.n_items} items); "
            f"use smaller cut-offs, e.g. ks=[1,5]"
        )
    try:
        accepted = inspect.signature(cls.__init__).parameters
        extra = {k: v for k, v in dm.model_kwargs().items() if k in accepted}
        model = instantiate(
            cfg.model, n_users=dm.n_users, n_items=dm.n_items, **extra, _convert_="all"
        )
    except (TypeError, ValueError, InstantiationException) as e:
        if isinstance(e.__cause__, AdvrecError):  # the model's own check says it best
            raise e.__cause__ from None
        raise AdvrecError(f"bad model option: {e}. Check the overrides of model.*") from None
    model.run_config = OmegaConf.to_container(cfg, resolve=False)
    dm.schedule = getattr(model, "schedule", None)
    return model


def build_callbacks(cfg: DictConfig) -> list[Callback]:
    from advrec.protocol import Protocol

    protocol = Protocol.from_config(cfg.protocol)
    out = []
    for cb in (cfg.get("callbacks") or {}).values():
        if not protocol.keeps_callback(cb._target_):
            continue
        if "ProgressBar" in cb._target_ and not _interactive(cfg):
            continue
        out.append(instantiate(cb))
    return out


def _interactive(cfg: DictConfig) -> bool:
    """A progress bar only helps a person watching a terminal; in a log file it costs time."""
    return sys.stdout.isatty() and cfg.trainer.get("enable_progress_bar", True) is not False


def build_loggers(cfg: DictConfig) -> list[Logger]:
    return [instantiate(lg) for lg in (cfg.get("logger") or {}).values()]


def build_trainer(cfg: DictConfig, **overrides) -> Trainer:
    """The configured Trainer; `overrides` (e.g. the protocol's) win over `cfg.trainer`."""
    tcfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    tcfg.update(overrides)
    if "callbacks" not in overrides:
        tcfg["callbacks"] = build_callbacks(cfg)
        if not _interactive(cfg):
            tcfg["enable_progress_bar"] = False
    if "logger" not in overrides:
        tcfg["logger"] = build_loggers(cfg) or False
    if "plugins" not in tcfg and SLURMEnvironment.detect():
        # submitit asks for SIGUSR2 before the time limit (hydra/launcher=slurm): Lightning
        # then saves an hpc checkpoint in the run dir and requeues; the rerun resumes from it
        tcfg["plugins"] = [SLURMEnvironment(auto_requeue=True, requeue_signal=signal.SIGUSR2)]
    try:
        return instantiate(tcfg)
    except (TypeError, ValueError, InstantiationException) as e:
        raise AdvrecError(f"bad trainer option: {e}") from None


# What a config may instantiate: advrec's own classes and the Lightning pieces it configures.
# Anything else (a checkpoint's stored config is untrusted input) needs allow_targets=[...].
SAFE_TARGETS = (
    "advrec.",
    "hydra_plugins.advrec_optuna_sweeper.",
    "lightning.Trainer",
    "lightning.pytorch.Trainer",
    "lightning.pytorch.loggers.",
    "lightning.pytorch.callbacks.",
)


def check_targets(cfg, allowed: Sequence[str] = (), where: str = "the config") -> None:
    """Refuse any `_target_` outside advrec's own classes and `allowed` prefixes."""
    prefixes = (*SAFE_TARGETS, *allowed)
    for key, target in _targets(OmegaConf.to_container(cfg, resolve=False)):
        if not isinstance(target, str) or not target.startswith(prefixes):
            raise AdvrecError(
                f"{where} names {key}._target_={target!r}, which is not an advrec class; "
                "refusing to instantiate it. If you trust it, add allow_targets=['<prefix>']"
            )


def _targets(node, key: str = ""):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "_target_":
                yield key or "<root>", v
            else:
                yield from _targets(v, f"{key}.{k}" if key else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _targets(v, f"{key}[{i}]")


def load_checkpoint(
    ckpt_path: str | Path, paths: DictConfig, allowed: Sequence[str] = ()
) -> tuple[Recommender, DictConfig]:
    """A trained model plus the training config it stored, with today's `paths`."""
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
    check_targets(cfg, allowed, where=f"the config stored in {path}")
    with open_dict(cfg):
        cfg.paths = paths
    model = model_class(cfg).load_from_checkpoint(path, map_location="cpu", weights_only=True)
    model.eval()
    return model, cfg
