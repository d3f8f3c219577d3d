"""Checks a run's config passes before anything is built: values in range, a monitor
validation computes, training that trains, and only advrec's own classes instantiated."""

from __future__ import annotations

from collections.abc import Sequence

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from advrec.errors import AdvrecError
from advrec.metrics.names import METRICS
from advrec.metrics.per_user import splits_of
from advrec.models.base import Recommender


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
    splits_of(cfg.get("per_user"))


def check_training(cfg: DictConfig, cls: type[Recommender]) -> None:
    """A trained model must train: trainer settings that allow no training step would test
    (and checkpoint as final) the random initialisation. Closed forms fit without steps."""
    from advrec.models.base import ClosedForm

    if issubclass(cls, ClosedForm):
        return
    t = cfg.trainer
    name = cfg.model.get("_target_", "").rsplit(".", 1)[-1]
    for key, value in (
        ("max_epochs", t.get("max_epochs")),
        ("max_steps", t.get("max_steps")),
        ("limit_train_batches", t.get("limit_train_batches")),
    ):
        if value is not None and value == 0:
            raise AdvrecError(
                f"trainer.{key}=0 lets {name} take no training step: its metrics and "
                f"final.ckpt would be those of an untrained model; set trainer.{key} >= 1 "
                "(or -1/null for no limit)"
            )
    if t.get("max_epochs") is not None and t.max_epochs < -1:
        raise AdvrecError(f"trainer.max_epochs={t.max_epochs}: give a number >= 1 (or -1)")


def check_monitor(cfg: DictConfig) -> None:
    """The metric that selects the checkpoint (and stops early) must be one validation
    computes: a known name at a cut-off in `ks`."""
    monitor = cfg.protocol.get("monitor")
    if not monitor:
        return
    stage, _, rest = str(monitor).partition("/")
    name, _, k = rest.partition("@")
    ks = [int(x) for x in cfg.ks]
    if stage != "val" or name not in METRICS or not k.isdigit():
        raise AdvrecError(
            f"protocol.monitor={monitor!r}: name a validation metric val/<metric>@<k>, "
            f"<metric> one of {METRICS}, e.g. val/ndcg@{ks[-1]}"
        )
    if int(k) not in ks:
        raise AdvrecError(
            f"protocol.monitor={monitor} needs the cut-off {k} in ks={ks}: add it "
            f"(ks={sorted({*ks, int(k)})}) or monitor another, e.g. "
            f"protocol.monitor=val/{name}@{ks[-1]}"
        )


# What a config may instantiate: advrec's own classes and the Lightning pieces it configures.
# Anything else (a checkpoint's stored config is untrusted input) needs allow_targets=[...].
SAFE_TARGETS = (
    "advrec.",
    "hydra_plugins.advrec_optuna_sweeper.",
    "lightning.Trainer",
    "lightning.pytorch.Trainer",
    "lightning.pytorch.loggers.",
    "lightning.pytorch.callbacks.",
    "lightning.pytorch.profilers.",
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
