"""advrec-eval: evaluate a checkpoint again on the split it was trained with."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from advrec.config import CONF_DIR
from advrec.errors import AdvrecError
from advrec.utils.console import console, metrics_table, user_errors


@user_errors
def evaluate(cfg: DictConfig) -> dict:
    """Metrics of `cfg.ckpt_path` on `cfg.split` ('test' or 'val'); writes metrics.json and
    per_user_<split>.parquet."""
    from advrec.metrics.per_user import write_files
    from advrec.run.build import eval_trainer
    from advrec.run.checkpoints import checked_datamodule, load_checkpoint
    from advrec.utils.io import write_json  # here, not at the top: `--help` needs neither

    if cfg.split not in ("test", "val"):
        raise AdvrecError(f"split={cfg.split!r}: choose test or val")
    model, run_cfg = load_checkpoint(cfg.ckpt_path, cfg)
    dm = checked_datamodule(run_cfg, model, cfg.ckpt_path)
    trainer = eval_trainer(cfg)
    if cfg.split == "val":
        if model.refit_on:
            raise AdvrecError(
                f"this checkpoint was refit on {model.refit_on} before its test, so it has "
                "trained on the validation split; the validation scores of the model it "
                "repeats are in its run's metrics.json. Use split=test"
            )
        if dm.val_matrix is None:
            raise AdvrecError(
                "this run has no validation split (protocol=original); use split=test"
            )
        result = trainer.validate(model, datamodule=dm, verbose=False)[0]
    else:
        result = trainer.test(model, datamodule=dm, verbose=False)[0]
    metrics = {
        "checkpoint": str(Path(cfg.ckpt_path).resolve()),
        "data": run_cfg.data.name,
        "protocol": run_cfg.protocol.name,
        "optimistic": bool(run_cfg.protocol.optimistic),
        "checkpoint_status": model.saved_status or "final",
        "dataset": dm.describe(),  # with the test split's fingerprint (reports pair on it)
        **{k: float(v) for k, v in sorted(result.items())},
    }
    if trainer.is_global_zero:
        out = Path(cfg.paths.output_dir)
        write_files(out, model.per_user, [cfg.split], dm.data.user_ids, model.ks)
        write_json(out / "metrics.json", metrics)
        console.print(metrics_table(metrics, model.ks, f"{type(model).__name__}: {cfg.ckpt_path}"))
    return metrics


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
