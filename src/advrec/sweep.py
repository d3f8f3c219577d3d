"""Optuna hyper-parameter search as a Hydra sweeper: `advrec-train -m hparams_search=<model>`.

The search space is written in Hydra's sweep grammar (`interval(a, b)`, `tag(log,
interval(a, b))`, `range(a, b)`, `choice(...)`), the sampler is a seeded TPE with
`n_startup_trials` random trials first, the objective is what the task returns (advrec-train:
the validation metric `protocol.monitor`). The study lives in `storage`: a journal file
(default, no database needed) or an RDB URL (`sqlite:///...`). Rerunning the same command
resumes the study: finished trials count toward `n_trials` and are never rerun; trials that
were running when the sweep died are marked failed and their parameters tried once more.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.plugins import Plugins
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from advrec.errors import AdvrecError
from advrec.utils.io import write_json

log = logging.getLogger(__name__)
INTERRUPTED = "interrupted"  # user attribute of trials a dead sweep left running


def distribution(override: Override):
    """The Optuna distribution of one sweep override; None for a fixed value."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if not override.is_sweep_override():
        return None
    value = override.value()
    if override.is_choice_sweep():
        return CategoricalDistribution(list(override.sweep_iterator()))
    if override.is_range_sweep():  # range(a, b[, step]) stops before b, like Python's
        start, stop, step = value.start, value.stop, value.step
        if any(isinstance(v, float) for v in (start, stop, step)):
            n = math.floor((stop - start) / step - 1e-9)
            return FloatDistribution(start, start + n * step, step=step)
        last = start + (stop - 1 - start) // step * step
        return IntDistribution(int(start), int(last), step=int(step))
    if override.is_interval_sweep():
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log_scale)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    raise AdvrecError(f"{override.input_line}: sweep kind not supported by the Optuna sweeper")


def search_space(lines: Sequence[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Split `key=value` lines into Optuna distributions and fixed overrides."""
    space, fixed = {}, {}
    for override in OverridesParser.create().parse_overrides(list(lines)):
        key = override.get_key_element()
        dist = distribution(override)
        if dist is None:
            fixed[key] = override.get_value_element_as_str()
        else:
            space[key] = dist
    return space, fixed


def open_storage(storage: str | Path):
    """An RDB URL (`sqlite:///...`, `postgresql://...`) or a journal file path."""
    import optuna

    storage = str(storage)
    if "://" in storage:
        return optuna.storages.RDBStorage(storage)
    from optuna.storages.journal import JournalFileBackend

    Path(storage).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(storage)))


def reclaim_interrupted(study) -> int:
    """Mark trials a dead sweep left RUNNING as failed and queue their parameters again."""
    from optuna.trial import TrialState

    n = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(trial._trial_id, INTERRUPTED, True)
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        if trial.params:
            study.enqueue_trial(trial.params)
        n += 1
    return n


def _check_same_sweep(study, arguments: Sequence[str]) -> None:
    """A study resumes only under the overrides it started with (else it would mix runs of
    different configurations in one ranking)."""
    overrides = sorted(arguments)
    stored = study.user_attrs.get("overrides")
    if stored is None:
        study.set_user_attr("overrides", overrides)
    elif stored != overrides:
        raise AdvrecError(
            f"study {study.study_name!r} was started with the overrides {stored}, not "
            f"{overrides}; resume it with those, or start another study "
            "(hydra.sweeper.study_name=... or hydra.sweep.dir=...)"
        )


def spent(study) -> int:
    """Trials that count toward the budget: finished ones, not those cut off by a crash."""
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
    return sum(1 for t in done if not t.user_attrs.get(INTERRUPTED))


class OptunaSearch:
    """The sweeper's logic (the Hydra plugin class in `hydra_plugins` only delegates)."""

    def __init__(
        self,
        params: dict | None = None,
        n_trials: int = 50,
        n_startup_trials: int = 16,
        n_jobs: int = 1,
        seed: int = 0,
        direction: str = "maximize",
        storage: str | None = None,
        study_name: str = "advrec",
        max_failure_rate: float = 0.0,
    ):
        self.params = {str(k): "null" if v is None else str(v) for k, v in (params or {}).items()}
        self.n_trials, self.n_startup_trials, self.n_jobs = n_trials, n_startup_trials, n_jobs
        self.seed, self.direction, self.storage = seed, direction, storage
        self.study_name, self.max_failure_rate = study_name, max_failure_rate

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
        self.sweep_dir = Path(config.hydra.sweep.dir)

    def sweep(self, arguments: list[str]) -> dict:
        import optuna

        lines = [f"{k}={v}" for k, v in self.params.items()] + list(arguments)
        space, fixed = search_space(lines)
        if not space:
            raise AdvrecError("the Optuna sweep has no search space (hydra.sweeper.params)")
        where = self.storage or str(self.sweep_dir / "optuna.journal")
        study = optuna.create_study(
            study_name=self.study_name,
            storage=open_storage(where),
            direction=self.direction,
            load_if_exists=True,
        )
        _check_same_sweep(study, arguments)
        reclaimed = reclaim_interrupted(study)
        # a resumed study gets a fresh random stream, so it cannot redraw earlier trials
        study.sampler = optuna.samplers.TPESampler(
            n_startup_trials=self.n_startup_trials,
            seed=self.seed * 100_003 + len(study.trials),
        )
        log.info(
            "Optuna study %r in %s: %d of %d trials done%s",
            self.study_name,
            where,
            spent(study),
            self.n_trials,
            f", {reclaimed} interrupted trial(s) queued again" if reclaimed else "",
        )
        while (left := self.n_trials - spent(study)) > 0:
            trials = [study.ask(space) for _ in range(min(self.n_jobs, left))]
            overrides = [
                tuple(f"{k}={v}" for k, v in {**t.params, **fixed}.items()) for t in trials
            ]
            returns = self.launcher.launch(overrides, initial_job_idx=trials[0].number)
            for trial, ret in zip(trials, returns, strict=True):
                self._tell(study, trial, ret)
            self._check_failures(study)
        return self._summarise(study)

    def _tell(self, study, trial, ret) -> None:
        from optuna.trial import TrialState

        try:
            value = ret.return_value  # re-raises the job's exception
            if value is None:
                raise AdvrecError(
                    "the task returned no objective: set protocol.monitor (e.g. "
                    "protocol=validated, monitor val/ndcg@10)"
                )
            study.tell(trial, float(value))
        except AdvrecError:
            study.tell(trial, state=TrialState.FAIL)
            raise
        except Exception as e:  # a failed trial is recorded; the sweep goes on
            log.warning("trial %d failed: %s", trial.number, e)
            study.tell(trial, state=TrialState.FAIL)

    def _check_failures(self, study) -> None:
        from optuna.trial import TrialState

        finished = spent(study)
        failed = finished - len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        if finished and failed / finished > self.max_failure_rate:
            raise AdvrecError(
                f"{failed} of {finished} trials failed (max_failure_rate="
                f"{self.max_failure_rate}); see the trial logs under {self.sweep_dir}"
            )

    def _summarise(self, study) -> dict:
        best = study.best_trial
        summary = {
            "study": self.study_name,
            "direction": self.direction,
            "n_trials": spent(study),
            "best_value": best.value,
            "best_trial": best.number,
            "best_params": best.params,
            "trials": [
                {"number": t.number, "state": t.state.name, "value": t.value, "params": t.params}
                for t in study.trials
            ],
        }
        write_json(self.sweep_dir / "optuna_best.json", summary)
        OmegaConf.save(OmegaConf.create(best.params), self.sweep_dir / "optuna_best.yaml")
        log.info("best trial %d: %s = %.4f", best.number, best.params, best.value)
        return summary
