"""Pruning in advrec's Optuna sweeper: each validation check of a trial is reported to its
Optuna trial, and the study's pruner may stop it there.

The pruner is a config group spelled like the samplers (`hydra/sweeper/pruner=none | median
| hyperband | successive_halving`, Optuna's pruners with their own parameters; the sweeper
builds it, `advrec.sweep.make_pruner`). The sweeper
passes each trial its number (`trial=N`); the trial's run adds `PruningCallback` to its
selection fit (never to the refit or a closed form's grid), which reports the monitored
metric at validation check 1, 2, ... and raises `TrialPruned` when the pruner says so. The
run then removes its checkpoints and writes no metrics.json; the sweeper records the trial
as PRUNED (it counts toward n_trials, and a resumed search never reruns it).
"""

from __future__ import annotations

from lightning import Callback

from advrec.errors import TrialPruned


class PruningCallback(Callback):
    """Reports `monitor` after each validation check to `trial`; stops a pruned trial."""

    def __init__(self, trial, monitor: str):
        self.trial, self.monitor = trial, monitor
        self.checks = 0

    def on_validation_end(self, trainer, pl_module) -> None:
        # checks of the fit only: the protocol's re-validation of the selected model (its own
        # trainer.validate) is no step of the curve, and must not prune a finished trial
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        self.checks += 1
        prune = False
        if trainer.is_global_zero:
            self.trial.report(float(value), self.checks)
            prune = self.trial.should_prune()
        if trainer.strategy.broadcast(prune, src=0):  # every process stops, or none
            raise TrialPruned(
                f"pruned at validation check {self.checks} ({self.monitor} = {float(value):.4f})"
            )


def pruning_callback(cfg) -> PruningCallback | None:
    """The callback of a trial of a pruned search (`trial` set by the sweeper), else None."""
    number = cfg.get("trial")
    if number is None:
        return None
    import optuna
    from omegaconf import OmegaConf

    from advrec.sweep import make_pruner, open_storage, prunes, storage_of
    from advrec.utils.compat import trial_handle
    from advrec.utils.runtime import hydra_runtime

    hc = hydra_runtime()
    if hc is None:  # outside a Hydra app there is no sweeper and no study
        return None
    sweeper = hc.sweeper
    spec = OmegaConf.to_container(sweeper.get("pruner") or {}, resolve=True)
    if not prunes(spec) or not cfg.protocol.get("monitor"):
        return None
    study = optuna.load_study(
        study_name=sweeper.study_name,
        # not healed here: the sweeper may be writing its journal right now
        storage=open_storage(storage_of(sweeper.get("storage"), hc.sweep.dir), heal=False),
        pruner=make_pruner(spec),
    )
    return PruningCallback(trial_handle(study, int(number)), cfg.protocol.monitor)
