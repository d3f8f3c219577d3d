"""One advrec-train run, from a composed config to metrics.json: the checks, the run dir,
the optional pre-training, the protocol (fit, select, refit, test once), final.ckpt, the
per-user files and the console's results table. `advrec.train` is its Hydra shell."""

from __future__ import annotations

import copy
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import NoReturn

from lightning import seed_everything
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from advrec.errors import TrialPruned
from advrec.metrics.per_user import write_files
from advrec.models.base import ClosedForm
from advrec.models.gan import GANRecommender
from advrec.run import rundir
from advrec.run.build import (
    build_datamodule,
    build_model,
    build_trainer,
    portable,
    trainer_factories,
)
from advrec.run.guards import (
    check_monitor,
    check_settings,
    check_targets,
    check_training,
    model_class,
)
from advrec.run.protocol import Protocol
from advrec.utils.console import command, console, metrics_table, print_config
from advrec.utils.io import write_json
from advrec.utils.runtime import choices, in_search

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    """Run one experiment; returns the metrics dict written to `metrics.json`."""
    start = time.perf_counter()
    check_targets(cfg, cfg.get("allow_targets") or ())
    check_settings(cfg)
    seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.get("print_config"):
        print_config(cfg)
    protocol = Protocol.from_config(cfg.protocol)
    cls = model_class(cfg)
    closed = issubclass(cls, ClosedForm)
    console.print(f"advrec-train: {_describe(cfg, cls.__name__, closed)} -> {cfg.paths.output_dir}")
    check_monitor(cfg)
    check_training(cfg, cls)
    if cfg.get("pretrain"):  # its choice is set below; a resume may not change the rest
        with open_dict(cfg):
            cfg.accept_changes = [*(cfg.get("accept_changes") or []), "model.init_ckpt"]
    resume = rundir.prepare(cfg, portable(OmegaConf.to_container(cfg, resolve=False)))
    with open_dict(cfg):
        cfg.ckpt_path = resume
    dm = build_datamodule(cfg)
    try:
        pre = _pretrain(cfg, dm, protocol, resume) if cfg.get("pretrain") else None
        refit_overrides = {}
        if pre is not None:  # selection starts from the pre-training's selected model, the
            # refit from its refit (neither ever saw data its own stage must not see)
            with open_dict(cfg):
                cfg.model.init_ckpt = pre["selected"]
            refit_overrides["init_ckpt"] = pre["final"]
        models = [build_model(cfg, dm)]
        trainer = build_trainer(cfg, **protocol.trainer_overrides(models[0], dm))
        # handed over, not kept here: the protocol lets the selection model go before the refit
        # (explicit keywords: a call with **kwargs keeps its positional arguments, the model
        # among them, alive in a tuple until it returns)
        make, make_eval = trainer_factories(cfg)
        res = protocol.run(
            models.pop(), dm, trainer, seed=cfg.seed, output_dir=cfg.paths.output_dir,
            ckpt_path=resume, refit_overrides=refit_overrides, make_trainer=make,
            make_eval_trainer=make_eval,
        )  # fmt: skip
    except TrialPruned:  # no result: nothing of it may be resumed or reported
        shutil.rmtree(Path(cfg.paths.output_dir) / "checkpoints", ignore_errors=True)
        raise
    except SIGTERMException:
        _stopped(cfg, "SIGTERM", 143)
    except KeyboardInterrupt:
        _stopped(cfg, "Ctrl-C", 130)
    except SystemExit as e:  # Lightning ends a fit cut by Ctrl-C with sys.exit(1)
        if not isinstance(e.__context__, KeyboardInterrupt):
            raise
        _stopped(cfg, "Ctrl-C", 130)
    model = res.model
    out_dir = Path(cfg.paths.output_dir)
    final = out_dir / "checkpoints" / "final.ckpt"
    model.status = "final"
    trainer.save_checkpoint(final, weights_only=True)  # the tested model, not a resume point

    metrics = {
        **_identity(cfg, cls),
        **res.metrics(),
        "dataset": dm.describe(),
        "checkpoint": str(final),
        **({"pretrain": pre["metrics"]} if pre else {}),
        "wall_time_s": round(time.perf_counter() - start, 3),
    }
    _finish_wandb()
    if trainer.is_global_zero:  # the results table comes last: nothing pushes it off screen
        _write_results(cfg, out_dir, metrics, res, dm, model.ks)
    return metrics


def _identity(cfg: DictConfig, cls: type) -> dict:
    """What metrics.json says the run was, before its numbers."""
    return {
        "model": cls.__name__,
        "label": cfg.get("label") or cls.__name__,
        "adversarial": issubclass(cls, GANRecommender),  # reports mark GANs apart
        "data": cfg.data.name,
        "protocol": cfg.protocol.name,
        "optimistic": bool(cfg.protocol.optimistic),
        "seed": int(cfg.seed),
        **({"debug": cfg.debug} if cfg.get("debug") else {}),  # a check, never a result
    }


def _write_results(cfg: DictConfig, out_dir: Path, metrics: dict, res, dm, ks) -> None:
    """The per-user files, then metrics.json (atomic, last: it marks a finished run), then
    the console's results table."""
    write_files(out_dir, res.per_user, cfg.get("per_user", ["test"]), dm.data.user_ids, ks)
    write_json(out_dir / "metrics.json", metrics)
    console.print(f"metrics.json: {out_dir / 'metrics.json'}  ({metrics['wall_time_s']:.1f} s)")
    for profile in sorted(out_dir.glob("*-profile.txt")):  # debug=profiler
        console.print(f"profiler report: {profile}")
    console.print(metrics_table(metrics, ks, _title(cfg, metrics)))


def _pretrain(cfg: DictConfig, dm, protocol, resume: str | None) -> dict:
    """`pretrain.model` (e.g. IRGAN's BPR-DNS) trained first on the same split under the same
    protocol, into <run dir>/pretrain/. Returns its selected and its final (tested, refit)
    checkpoint and its metrics; a resumed run reuses a finished pre-training."""
    out = Path(cfg.paths.output_dir) / "pretrain"
    if resume and (out / "metrics.json").is_file():
        metrics = json.loads((out / "metrics.json").read_text())
        final = metrics["checkpoint"]
        return {
            "selected": metrics.get("selected_checkpoint") or final,
            "final": final,
            "metrics": metrics,
        }
    pcfg = copy.deepcopy(cfg)
    with open_dict(pcfg):
        pcfg.model = cfg.pretrain.model
        pcfg.trainer = OmegaConf.merge(cfg.trainer, cfg.pretrain.get("trainer") or {})
        pcfg.paths.output_dir = str(out)
        pcfg.ckpt_path = None
        pcfg.trial = None  # a pruned search follows the model's own curve, not its start's
        del pcfg.pretrain
    models = [build_model(pcfg, dm)]
    trainer = build_trainer(
        pcfg,
        logger=CSVLogger(str(out), name="csv", version=""),
        **protocol.trainer_overrides(models[0], dm),
    )
    log.info("pre-training %s into %s", type(models[0]).__name__, out)
    # handed over, as in train()
    make, make_eval = trainer_factories(pcfg)
    res = protocol.run(
        models.pop(), dm, trainer, seed=pcfg.seed, output_dir=out, make_trainer=make,
        make_eval_trainer=make_eval,
    )  # fmt: skip
    final = out / "checkpoints" / "final.ckpt"
    res.model.status = "final"
    trainer.save_checkpoint(final, weights_only=True)
    metrics = {"model": type(res.model).__name__, **res.metrics(), "checkpoint": str(final)}
    if trainer.is_global_zero:
        write_json(out / "metrics.json", metrics)
    return {
        "selected": res.selected_checkpoint or str(final),
        "final": str(final),
        "metrics": metrics,
    }


def _preset(model: str) -> str:
    """The experiment this run composes, else its model choice."""
    chosen = choices()
    return chosen.get("experiment") or f"model={chosen.get('model', model)}"


def _describe(cfg: DictConfig, model: str, closed: bool) -> str:
    """What starts: model, data, preset, protocol, seed and the epoch cap (a closed-form
    model has none)."""
    epochs = cfg.trainer.get("max_epochs")
    cap = f", up to {epochs} epochs" if epochs and epochs > 0 and not closed else ""
    flag = ", optimistic" if cfg.protocol.get("optimistic") else ""
    debug = f"DEBUG RUN (debug={cfg.debug}): " if cfg.get("debug") else ""
    return (
        f"{debug}{model} on {cfg.data.name} ({_preset(model)}, protocol={cfg.protocol.name}"
        f"{flag}, seed {cfg.seed}{cap})"
    )


def _title(cfg: DictConfig, metrics: dict) -> str:
    """Which run this was: model, data, preset/experiment, epochs, protocol."""
    preset = _preset(metrics["model"])
    flag = ", optimistic" if metrics["optimistic"] else ""
    epochs = metrics["selected_epoch"]  # None: a closed-form fit, no epochs
    chosen = f", epoch {epochs} chosen" if metrics["selected_checkpoint"] else ""
    n = metrics["epochs"]
    ran = f"{n} epoch{'s' if n != 1 else ''}{chosen}, " if epochs else ""
    refit = f"refit on {metrics['refit']}, " if metrics["refit"] else ""
    debug = f"DEBUG RUN (debug={metrics['debug']}), not a result: " if "debug" in metrics else ""
    return (
        f"{debug}{metrics['model']} on {metrics['data']} ({preset}, {ran}{refit}"
        f"protocol={metrics['protocol']}{flag})"
    )


def _stopped(cfg: DictConfig, why: str, code: int) -> NoReturn:
    """A run cut off by a signal: one line on what is kept and the command that resumes."""
    out = Path(cfg.paths.output_dir)
    last = out / "checkpoints" / "last.ckpt"
    if in_search():
        where = (
            "this trial is cut off; finished trials are kept and this one is tried again "
            f"when the same command runs again: {command()}"
        )
    elif last.is_file():
        resume = (
            f"{command(drop=('hydra.run.dir', 'ckpt_path'))} hydra.run.dir={out} ckpt_path=last"
        )
        where = f"the state at this step is in {last}. Resume: {resume}"
    else:
        where = "before training started: nothing to resume; run the command again"
    print(f"advrec: stopped by {why}; {where}", file=sys.stderr)
    sys.exit(code)


def _finish_wandb() -> None:
    """Close the W&B run (W&B itself is silent) and say where it is: its link, or for an
    offline run its folder and how to upload it."""
    wandb = sys.modules.get("wandb")
    run = wandb.run if wandb is not None else None
    if run is None:
        return
    where = Path(run.dir).parent if run.offline else None
    url = None if run.offline else run.url
    wandb.finish()
    if where is not None:
        console.print(f"W&B offline run: {where}  (upload: wandb sync {where})")
    elif url:
        console.print(f"W&B run: {url}")
