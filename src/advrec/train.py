"""advrec-train: fit, choose on validation, test once, write metrics.json and final.ckpt.
The run itself is `advrec.run.experiment.run`; this module is its Hydra entry point."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from advrec.config import CONF_DIR
from advrec.utils.console import user_errors

# torch, Lightning and the run package are imported where a run starts, not here: `--help`
# and `--cfg job` answer without them (5.6 s -> under a second on a 2-core box)


@user_errors
def train(cfg: DictConfig) -> dict:
    """Run one experiment; returns the metrics dict written to `metrics.json`."""
    from advrec.run.experiment import run

    return run(cfg)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    from advrec.errors import TrialPruned
    from advrec.sweep import Pruned

    try:
        metrics = train(cfg)
    except TrialPruned as e:  # only inside a search (user_errors ends other runs)
        return Pruned(str(e))
    monitor = cfg.protocol.monitor
    return metrics.get(monitor) if monitor else None  # the objective of Hydra sweepers


if __name__ == "__main__":
    main()
