"""advrec-train: fit, choose on validation, test once, write metrics.json and final.ckpt."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import hydra
from lightning import seed_everything
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from advrec.config import CONF_DIR
from advrec.models.base import ClosedForm
from advrec.pipeline import build_datamodule, build_model, build_trainer, model_class
from advrec.utils.console import console, metrics_table, print_config, user_errors
from advrec.utils.io import write_json

log = logging.getLogger(__name__)


@user_errors
def train(cfg: DictConfig) -> dict:
    """Run one experiment; returns the metrics dict written to `metrics.json`."""
    start = time.perf_counter()
    seed_everything(cfg.seed, workers=True, verbose=False)
    print_config(cfg)
    cls = model_class(cfg)
    dm = build_datamodule(cfg, rows=cfg.model.get("rows", cls.rows))
    model = build_model(cfg, dm)
    trainer = build_trainer(cfg, dm)
    try:
        trainer.fit(model, datamodule=dm, ckpt_path=cfg.get("ckpt_path"))
    except SIGTERMException:
        out = Path(cfg.paths.output_dir)
        print(
            f"advrec: stopped by SIGTERM; the state at this step is in {out}/checkpoints/"
            f"last.ckpt. Resume with the same overrides plus hydra.run.dir={out} ckpt_path=last",
            file=sys.stderr,
        )
        sys.exit(143)
    selection = list(getattr(model, "selection", []))

    val: dict = {}
    best = ""
    if dm.val_matrix is not None:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if best and cfg.protocol.monitor:
            model = cls.load_from_checkpoint(best, weights_only=False)
        val = trainer.validate(model, datamodule=dm, verbose=False)[0]
    if cfg.protocol.refit and isinstance(model, ClosedForm):
        model.refit(dm.train_full_matrix)
    test = trainer.test(model, datamodule=dm, verbose=False)[0]
    out_dir = Path(cfg.paths.output_dir)
    final = out_dir / "checkpoints" / "final.ckpt"
    trainer.save_checkpoint(final, weights_only=False)

    metrics = {
        "model": cls.__name__,
        "label": cfg.get("label") or cls.__name__,
        "data": cfg.data.name,
        "protocol": cfg.protocol.name,
        "optimistic": bool(cfg.protocol.optimistic),
        "seed": int(cfg.seed),
        **{k: float(v) for k, v in sorted(val.items())},
        **{k: float(v) for k, v in sorted(test.items())},
        "hparams": {k: v for k, v in model.hparams.items() if k not in ("n_users", "n_items")},
        "selection": selection,
        "dataset": dm.describe(),
        "checkpoint": str(final),
        "selected_checkpoint": best or None,  # the validation-best one the test used
        "epochs": int(trainer.current_epoch),  # epochs run (early stopping may cut short)
        "wall_time_s": round(time.perf_counter() - start, 3),
    }
    if trainer.is_global_zero:
        write_json(out_dir / "metrics.json", metrics)
        console.print(metrics_table(metrics, model.ks, _title(cfg, metrics)))
        console.print(f"metrics.json: {out_dir / 'metrics.json'}  ({metrics['wall_time_s']:.1f} s)")
    _finish_wandb()
    return metrics


def _title(cfg: DictConfig, metrics: dict) -> str:
    """Which run this was: model, data, preset/experiment, epochs, protocol."""
    from hydra.core.hydra_config import HydraConfig

    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    preset = choices.get("experiment") or f"model={choices.get('model', metrics['model'])}"
    flag = ", optimistic" if metrics["optimistic"] else ""
    return (
        f"{metrics['model']} on {metrics['data']} ({preset}, {metrics['epochs']} epochs, "
        f"protocol={metrics['protocol']}{flag})"
    )


def _finish_wandb() -> None:
    import sys

    if "wandb" in sys.modules:
        sys.modules["wandb"].finish()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    monitor = cfg.protocol.monitor
    return metrics.get(monitor) if monitor else None  # the objective of Hydra sweepers


if __name__ == "__main__":
    main()
