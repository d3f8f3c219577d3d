"""Build what a run needs from its config: the DataModule, the model, the Trainer (with its
callbacks, loggers and atomic checkpoint writer) and the evaluation-only Trainer."""

from __future__ import annotations

import logging
import shutil
import signal
import sys
from functools import partial
from pathlib import Path

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from lightning import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.loggers import Logger
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.plugins.io import CheckpointIO, TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from advrec.data.datamodule import RecDataModule
from advrec.errors import AdvrecError
from advrec.models.base import Recommender
from advrec.run.guards import model_class
from advrec.run.protocol import Protocol
from advrec.utils.callbacks import DivergenceGuard
from advrec.utils.compat import wandb_init_kwargs
from advrec.utils.io import write_bytes
from advrec.utils.progress import ProgressLines
from advrec.utils.runtime import choices, hydra_runtime, in_multirun
from advrec.utils.strategy import resolve_strategy

log = logging.getLogger(__name__)

# `import lightning` gives its logger a stderr handler of its own; under an entry point
# (Hydra's logging on: the terminal and the run's log file) every Lightning line would be
# printed twice. The entry points import this module after Hydra set up logging.
if logging.getLogger().handlers:
    for _handler in list(logging.getLogger("lightning").handlers):
        logging.getLogger("lightning").removeHandler(_handler)


def build_datamodule(cfg: DictConfig) -> RecDataModule:
    d = cfg.data
    dm = RecDataModule(
        source=d.source,
        split=OmegaConf.to_container(d.split, resolve=True),
        val_fraction=cfg.protocol.val_fraction,
        val_on_test=cfg.protocol.get("val_on_test", False),
        batch_size=d.batch_size,
        eval_batch_size=d.eval_batch_size,
        eval_users=d.get("eval_users", "all"),
        num_workers=d.get("num_workers", 0),
        seed=cfg.seed,
        cache_dir=cfg.paths.cache_dir,
        name=d.name,
        features=_container(d.get("features")),
        overfit_rows=d.get("overfit_rows"),
    )
    dm.setup()
    return dm


def _container(node):
    return OmegaConf.to_container(node, resolve=True) if node is not None else None


def build_model(cfg: DictConfig, dm: RecDataModule) -> Recommender:
    cls = model_class(cfg)
    if max(cfg.ks) > dm.n_items:
        fits = [k for k in cfg.ks if k <= dm.n_items] or [1]
        raise AdvrecError(
            f"ks={list(cfg.ks)} exceeds the catalogue ({dm.n_items} items); use cut-offs "
            f"up to {dm.n_items}, e.g. ks={fits} (and a protocol.monitor at one of them)"
        )
    try:
        facts = dm.model_kwargs()
        extra = {k: facts[k] for k in cls.data_facts}
        model = instantiate(
            cfg.model, n_users=dm.n_users, n_items=dm.n_items, **extra, _convert_="all"
        )
    except (TypeError, ValueError, InstantiationException) as e:
        if isinstance(e.__cause__, AdvrecError):  # the model's own check says it best
            raise e.__cause__ from None
        raise AdvrecError(f"bad model option: {e}. Check the overrides of model.*") from None
    model.check_limits()  # every model, also those whose constructor does not check
    model.run_config = portable(OmegaConf.to_container(cfg, resolve=False))
    model.data_identity = dm.identity()
    return model


DATA_FILE_KEYS = {"source": ("path", "train", "test", "val"), "features": ("path",)}


def portable(run_config: dict) -> dict:
    """The config as a checkpoint stores it: relative data file paths made absolute, so
    advrec-eval and advrec-recommend find the data from any folder."""
    data = run_config.get("data") or {}
    for part, keys in DATA_FILE_KEYS.items():
        node = data.get(part) or {}
        for key in keys:
            value = node.get(key)
            if isinstance(value, str) and "${" not in value and not Path(value).is_absolute():
                node[key] = str(Path(value).resolve())
    return run_config


def build_callbacks(cfg: DictConfig, console_only: bool = False) -> list[Callback]:
    """The configured callbacks the protocol keeps, with the console's for where stdout goes:
    the progress bar in a terminal, `ProgressLines` elsewhere. `console_only`: just those."""
    protocol = Protocol.from_config(cfg.protocol)
    interactive = _interactive(cfg)
    out = []
    for name, cb in (cfg.get("callbacks") or {}).items():
        if not protocol.keeps_callback(cb._target_):
            continue
        try:
            made = instantiate(cb)
        except InstantiationException as e:  # a callback's own refusal, else Hydra's words
            cause = e.__cause__
            if isinstance(cause, AdvrecError):
                raise cause from None
            raise AdvrecError(f"bad option in callbacks.{name}: {cause or e}") from None
        if isinstance(made, ProgressBar):
            keep = interactive
        elif isinstance(made, ProgressLines):
            keep = not interactive
        else:
            keep = not console_only
        if keep:
            out.append(made)
    if not console_only:  # a trial of a pruned search reports its validation checks
        from advrec.pruning import pruning_callback

        pruning = pruning_callback(cfg)
        out += [pruning] if pruning is not None else []
    return out


def _interactive(cfg: DictConfig) -> bool:
    """A progress bar only helps a person watching a terminal; in a log file it costs time
    (and `ProgressLines` says the same in a line per validation check)."""
    return sys.stdout.isatty() and cfg.trainer.get("enable_progress_bar", True) is not False


def build_loggers(cfg: DictConfig) -> list[Logger]:
    """The configured loggers; a W&B logger gets the run's identity (`wandb_identity`) where
    its config leaves name, group, tags or job_type unset, and the whole resolved config."""
    out = []
    for lg in (cfg.get("logger") or {}).values():
        if str(lg.get("_target_", "")).endswith("WandbLogger"):
            settings = OmegaConf.to_container(lg, resolve=True)
            for k, v in wandb_identity(cfg).items():
                settings[k] = v if settings.get(k) is None else settings[k]
            cls = get_class(settings.pop("_target_"))  # the config is data, not targets
            made = cls(**settings, config=run_config(cfg))
            init = wandb_init_kwargs(made)  # Lightning passes anonymous=None, which
            if init.get("anonymous", 0) is None:  # wandb >= 0.19 warns about on every run
                del init["anonymous"]
            out.append(made)
        else:
            out.append(instantiate(lg))
    return out


def run_config(cfg: DictConfig) -> dict:
    """The resolved run config plus the config groups chosen (experiment, model, data, ...)."""
    out = OmegaConf.to_container(cfg, resolve=True)
    out["choices"] = {k: v for k, v in choices().items() if v and not k.startswith("hydra/")}
    return out


def wandb_identity(cfg: DictConfig) -> dict:
    """Name `<label>-<data>-<protocol>-s<seed>` (`-t<trial>` in a multirun), group (the
    search's study, else the experiment, else data-protocol), tags and job_type."""
    hc = hydra_runtime()
    chosen = choices()
    experiment, search = chosen.get("experiment"), chosen.get("hparams_search")
    study = hc.sweeper.get("study_name") if (hc and search) else None
    label = cfg.get("label") or model_class(cfg).__name__
    protocol = cfg.protocol.name
    name = f"{label}-{cfg.data.name}-{protocol}-s{cfg.seed}"
    if in_multirun():
        name += f"-t{hc.job.num}"
    tags = [f"protocol:{protocol}", f"data:{cfg.data.name}"]
    tags += [f"experiment:{experiment}"] if experiment else []
    tags += ["optimistic"] if cfg.protocol.get("optimistic") else []
    tags += [f"search:{study or search}"] if search else []
    return {
        "name": name,
        "group": study or experiment or f"{cfg.data.name}-{protocol}",
        "tags": tags,
        "job_type": "search" if search else "train",
    }


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer made atomic (a temporary file beside the checkpoint is
    renamed over it): a full disk or a kill mid-write leaves the previous checkpoint or none,
    never a truncated one that looks real."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        try:
            write_bytes(path, lambda f: torch.save(checkpoint, f))
        except (OSError, RuntimeError) as e:  # torch reports a full disk as RuntimeError
            free = shutil.disk_usage(Path(path).parent).free
            raise AdvrecError(
                f"could not write the checkpoint {path} ({free / 2**20:.1f} MiB free there): "
                f"{str(e).splitlines()[0][:120]}; free space or write the run elsewhere "
                "(hydra.run.dir=..., paths.log_dir=...)"
            ) from None


def build_trainer(cfg: DictConfig, **overrides) -> Trainer:
    """The configured Trainer; `overrides` (e.g. the protocol's) win over `cfg.trainer`.
    Checkpoints are written atomically and the divergence guard watches every fit."""
    tcfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    tcfg.update(overrides)
    if "callbacks" not in overrides:
        tcfg["callbacks"] = build_callbacks(cfg)
    else:  # e.g. the refit's: still shows its progress as this run's console does
        tcfg["callbacks"] = [*build_callbacks(cfg, console_only=True), *tcfg["callbacks"]]
    if not _interactive(cfg):
        tcfg["enable_progress_bar"] = False
    if not any(isinstance(c, ModelCheckpoint) for c in tcfg["callbacks"]):
        # else Lightning adds one of its own, writing a checkpoint an epoch nobody reads
        tcfg["enable_checkpointing"] = False
    if "logger" not in overrides:
        tcfg["logger"] = build_loggers(cfg) or False
    plugins = list(tcfg.get("plugins") or [])
    if not any(isinstance(p, CheckpointIO) for p in plugins):
        plugins.append(AtomicCheckpointIO())
    if SLURMEnvironment.detect() and not any(isinstance(p, SLURMEnvironment) for p in plugins):
        # submitit asks for SIGUSR2 before the time limit (hydra/launcher=slurm): Lightning
        # then saves an hpc checkpoint in the run dir and requeues; the rerun resumes from it
        plugins.append(SLURMEnvironment(auto_requeue=True, requeue_signal=signal.SIGUSR2))
    tcfg["plugins"] = plugins
    tcfg["strategy"] = resolve_strategy(tcfg.get("strategy", "auto"))
    # never optional: a NaN/inf loss or weight stops every fit before it is checkpointed
    tcfg["callbacks"] = [DivergenceGuard(), *tcfg["callbacks"]]
    try:
        return instantiate(tcfg)
    except (TypeError, ValueError, InstantiationException) as e:
        raise AdvrecError(f"bad trainer option: {e}") from None


def bare_trainer(**settings) -> Trainer:
    """A Trainer without loggers, checkpoints, progress bar, summary or sanity checks, and
    with advrec's own samplers left alone; `settings` win."""
    base = dict(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
    )
    return Trainer(**{**base, **settings})


def eval_trainer(cfg: DictConfig, **settings) -> Trainer:
    """A bare Trainer on the accelerator, devices, strategy and precision of `cfg.trainer`
    (`settings` win). Every evaluation outside a fit goes through one: grid search,
    advrec-eval, advrec-recommend."""
    t = cfg.get("trainer") or {}
    keys = ("accelerator", "devices", "strategy", "precision")
    base = {k: t[k] for k in keys if t.get(k) is not None}
    if "strategy" in base:
        base["strategy"] = resolve_strategy(base["strategy"])
    try:
        return bare_trainer(default_root_dir=cfg.paths.output_dir, **{**base, **settings})
    except (TypeError, ValueError) as e:
        raise AdvrecError(f"bad trainer option: {e}") from None


def trainer_factories(cfg: DictConfig) -> tuple:
    """How the protocol gets its refit's and its grid's trainers for this config:
    (make_trainer(**overrides), make_eval_trainer())."""
    return partial(build_trainer, cfg), partial(eval_trainer, cfg)
