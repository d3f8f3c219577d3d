"""Optuna hyper-parameter search as a Hydra sweeper: `advrec-train hparams_search=<model>`.

The search space is written in Hydra's sweep grammar (`interval(a, b)`, `tag(log,
interval(a, b))`, `range(a, b)`, `choice(...)`), the sampler is a config group
(`hydra/sweeper/sampler=tpe|random|grid|cmaes|qmc`, seeded), the objective is what the task
returns (advrec-train: the validation metric `protocol.monitor`). The study lives in
`storage`: a journal file (default, no database needed) or an RDB URL (`sqlite:///...`).
Rerunning the same command resumes the study: finished trials count toward `n_trials` and are
never rerun; trials that were running when the sweep died are marked failed and their
parameters tried again, up to `max_retries` times each.
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

from advrec.errors import AdvrecError, BadTrial
from advrec.utils.io import write_csv, write_json

log = logging.getLogger(__name__)


class Pruned(str):
    """What a pruned trial's task returns (the reason): the sweeper records it as PRUNED."""


INTERRUPTED = "interrupted"  # user attribute of trials a dead sweep left running
RETRY = "retry"  # user attribute: how many times these parameters were queued again


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


def storage_of(storage: str | None, sweep_dir: str | Path) -> str:
    """Where the study lives: `hydra.sweeper.storage`, or the sweep folder's journal."""
    return str(storage) if storage else str(Path(sweep_dir) / "optuna.journal")


def open_storage(storage: str | Path, heal: bool = True):
    """An RDB URL (`sqlite:///...`, `postgresql://...`) or a journal file path (a record
    torn by a kill or a full disk is set aside first: `heal_journal`; only the sweeper
    heals, never a trial that reads the journal while the sweeper writes it)."""
    import optuna

    storage = str(storage)
    if "://" in storage:
        return optuna.storages.RDBStorage(storage)
    from optuna.storages.journal import JournalFileBackend

    Path(storage).parent.mkdir(parents=True, exist_ok=True)
    if heal:
        heal_journal(Path(storage))
    return optuna.storages.JournalStorage(JournalFileBackend(str(storage)))


def heal_journal(path: Path) -> int:
    """Cut a last record that a killed process or a full disk left half-written (no newline
    at its end, or not JSON): Optuna cannot read such a journal, and every resume would append
    after the torn bytes. The torn bytes are kept in `<journal>.torn`; returns their count."""
    import json

    if not path.is_file() or path.stat().st_size == 0:
        return 0
    data = path.read_bytes()
    cut = data.rstrip(b"\n").rfind(b"\n") + 1  # where the last record starts
    try:
        json.loads(data[cut:])
        if not data.endswith(b"\n"):  # whole, only its newline is missing: add it
            with open(path, "ab") as f:
                f.write(b"\n")
        return 0
    except ValueError:
        pass
    torn = data[cut:]
    with open(path.with_name(path.name + ".torn"), "ab") as f:
        f.write(torn + b"\n")
    with open(path, "r+b") as f:
        f.truncate(cut)
    log.warning(
        "%s ended in a torn record (%d bytes, e.g. from a killed search or a full disk): cut "
        "off and kept in %s; the trial it described is run again",
        path,
        len(torn),
        path.name + ".torn",
    )
    return len(torn)


class SweepLock:
    """One search at a time in a sweep folder: a second search started into the same folder
    would take the first one's live trials for interrupted ones and run them again. The lock
    is an OS file lock (released when the process dies, however it dies)."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / ".advrec-search.lock"
        self._file = None

    def acquire(self) -> None:
        import fcntl
        import os

        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")  # held for the whole search
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise AdvrecError(
                f"another search ({holder}) is running in {self.path.parent}: two searches "
                "in one folder would rerun each other's trials. Wait for it to end, or give "
                "this one its own folder (hydra.sweep.dir=...)"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}")
        f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def reclaim_interrupted(study, max_retries: int = 1) -> tuple[int, int]:
    """Mark trials a dead sweep left RUNNING as failed and queue their parameters again,
    unless they were already tried `max_retries` times more. Returns (queued, given up)."""
    from optuna.trial import TrialState

    from advrec.utils.compat import trial_handle

    queued = given_up = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        trial_handle(study, trial.number).set_user_attr(INTERRUPTED, True)
        study.tell(trial.number, state=TrialState.FAIL)
        retry = int(trial.user_attrs.get(RETRY, 0))
        if trial.params and retry < max_retries:
            study.enqueue_trial(trial.params, user_attrs={RETRY: retry + 1})
            queued += 1
        else:
            given_up += 1
    return queued, given_up


NOP = "optuna.pruners.NopPruner"  # hydra/sweeper/pruner=none (see advrec.pruning)


def make_pruner(spec: dict | None):
    """The configured Optuna pruner (NopPruner for none)."""
    from hydra.utils import get_class

    spec = dict(spec or {})
    target = spec.pop("_target_", NOP)
    try:
        return get_class(target)(**spec)
    except Exception as e:
        raise AdvrecError(f"hydra.sweeper.pruner ({target}): {e}") from None


def prunes(spec: dict | None) -> bool:
    return bool(spec) and spec.get("_target_", NOP) != NOP


def grid_of(space: dict[str, Any]) -> dict[str, list]:
    """The values a grid sampler walks: choice(...) and range(...) parameters only."""
    from optuna.distributions import CategoricalDistribution

    grid = {}
    for key, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            grid[key] = list(dist.choices)
        elif getattr(dist, "step", None) is not None:
            n = round((dist.high - dist.low) / dist.step)
            grid[key] = [dist.low + i * dist.step for i in range(n + 1)]
        else:
            raise AdvrecError(
                f"hydra/sweeper/sampler=grid needs a finite set for {key}: write it as "
                "choice(...) or range(...), not interval(...)"
            )
    return grid


def _ask_tell_grid():
    from optuna.samplers import GridSampler

    class AskTellGrid(GridSampler):
        """Optuna's grid without its `study.stop()` after the last cell, which raises outside
        `study.optimize`; the sweep's budget (at most the grid's size) ends the search."""

        def after_trial(self, study, trial, state, values) -> None:
            return None

    return AskTellGrid


def make_sampler(spec: dict, space: dict[str, Any], offset: int):
    """The configured Optuna sampler; a resumed study (`offset` trials in) gets a fresh seed,
    so it cannot redraw earlier trials."""
    from hydra.utils import get_class
    from optuna.samplers import GridSampler

    spec = dict(spec)
    target = spec.pop("_target_", "optuna.samplers.TPESampler")
    try:
        cls = get_class(target)
    except Exception as e:
        raise AdvrecError(f"hydra.sweeper.sampler._target_={target!r}: {e}") from None
    if spec.get("seed") is not None:
        spec["seed"] = int(spec["seed"]) * 100_003 + offset
    if cls is GridSampler:
        cls, spec["search_space"] = _ask_tell_grid(), grid_of(space)
    try:
        return cls(**spec)
    except (TypeError, ValueError) as e:
        raise AdvrecError(f"hydra.sweeper.sampler ({target}): {e}") from None


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

    done = study.get_trials(
        deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
    )
    return sum(1 for t in done if not t.user_attrs.get(INTERRUPTED))


class OptunaSearch:
    """The sweeper's logic (the Hydra plugin class in `hydra_plugins` only delegates)."""

    def __init__(
        self,
        params: dict | None = None,
        sampler: dict | None = None,
        n_trials: int = 50,
        n_jobs: int = 1,
        direction: str | Sequence[str] = "maximize",
        storage: str | None = None,
        study_name: str = "advrec",
        max_failure_rate: float = 0.0,
        max_retries: int = 1,
        objectives: Sequence[str] | None = None,
        pruner: dict | None = None,
    ):
        self.params = {str(k): "null" if v is None else str(v) for k, v in (params or {}).items()}
        if isinstance(sampler, DictConfig):
            sampler = OmegaConf.to_container(sampler, resolve=True)
        self.sampler = dict(sampler or {"_target_": "optuna.samplers.TPESampler", "seed": 0})
        self.n_trials, self.n_jobs = n_trials, n_jobs
        self.direction, self.storage = direction, storage
        self.study_name, self.max_failure_rate = study_name, max_failure_rate
        self.max_retries = max_retries
        # several metrics of each trial's metrics.json (a multi-objective search), else the
        # value the task returns (protocol.monitor)
        self.objectives = [str(o) for o in objectives] if objectives else None
        self.directions = _directions(direction, len(self.objectives or [None]))
        if isinstance(pruner, DictConfig):
            pruner = OmegaConf.to_container(pruner, resolve=True)
        self.pruner = dict(pruner or {})  # see advrec.pruning

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
        self.sweep_dir = Path(config.hydra.sweep.dir)

    def sweep(self, arguments: list[str]) -> dict:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # advrec logs the study itself
        lines = [f"{k}={v}" for k, v in self.params.items()] + list(arguments)
        space, fixed = search_space(lines)
        if not space:
            raise AdvrecError("the Optuna sweep has no search space (hydra.sweeper.params)")
        if prunes(self.pruner) and len(self.directions) > 1:
            raise AdvrecError(
                "a multi-objective search cannot prune (Optuna's pruners compare one curve): "
                "use hydra/sweeper/pruner=none, or one objective"
            )
        pruner = make_pruner(self.pruner)  # a bad pruner setting: refused before any file
        where = storage_of(self.storage, self.sweep_dir)
        lock = SweepLock(self.sweep_dir)
        lock.acquire()
        try:
            return self._search(where, space, fixed, arguments, pruner)
        finally:
            lock.release()

    def _search(self, where: str, space: dict, fixed: dict, arguments: list[str], pruner) -> dict:
        import optuna

        pruned = prunes(self.pruner)
        study = optuna.create_study(
            study_name=self.study_name,
            storage=open_storage(where),
            directions=self.directions,
            load_if_exists=True,
            pruner=pruner,
        )
        if len(study.directions) != len(self.directions):
            raise AdvrecError(
                f"study {self.study_name!r} has {len(study.directions)} objective(s), this sweep "
                f"{len(self.directions)}; start another study (hydra.sweeper.study_name=...)"
            )
        _check_same_sweep(study, arguments)
        queued, given_up = reclaim_interrupted(study, self.max_retries)
        study.sampler = make_sampler(self.sampler, space, len(study.trials))
        if len(self.directions) > 1 and "CmaEs" in type(study.sampler).__name__:
            raise AdvrecError(
                "CMA-ES optimises one objective; a multi-objective search needs "
                "hydra/sweeper/sampler=tpe, random, grid or qmc"
            )
        budget = self.n_trials
        if isinstance(study.sampler, optuna.samplers.GridSampler):
            budget = min(budget, math.prod(len(v) for v in grid_of(space).values()))
        notes = [f"{queued} interrupted trial(s) queued again"] if queued else []
        if given_up:
            notes.append(f"{given_up} interrupted trial(s) left failed (max_retries reached)")
        log.info(
            "Optuna study %r (%s) in %s: %d of %d trials done%s",
            self.study_name,
            str(self.sampler.get("_target_", "TPESampler")).rsplit(".", 1)[-1],
            where,
            spent(study),
            budget,
            "".join(f", {n}" for n in notes),
        )
        while (left := budget - spent(study)) > 0:
            trials = [study.ask(space) for _ in range(min(self.n_jobs, left))]
            overrides = [
                tuple(f"{k}={v}" for k, v in {**t.params, **fixed}.items())
                + ((f"trial={t.number}",) if pruned else ())  # it reports to its trial
                for t in trials
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
            if isinstance(value, Pruned):  # the pruner stopped it: expected, no warning
                _prune(study, trial, value, logging.INFO)
                return
            if self.objectives:
                study.tell(trial, self._objective_values(ret))
                return
            if value is None:
                raise AdvrecError(
                    "the task returned no objective: set protocol.monitor (e.g. "
                    "protocol=validated, monitor val/ndcg@10)"
                )
            study.tell(trial, float(value))
        except BadTrial as e:  # settings that leave no result (diverged, incompatible)
            _prune(study, trial, str(e), logging.WARNING)
        except AdvrecError:
            study.tell(trial, state=TrialState.FAIL)
            raise
        except Exception as e:  # a failed trial is recorded; the sweep goes on
            log.warning("trial %d failed: %s", trial.number, e)
            study.tell(trial, state=TrialState.FAIL)

    def _objective_values(self, ret) -> list[float]:
        """The trial's `objectives`, read from the metrics.json it wrote."""
        import json

        path = Path(ret.hydra_cfg.hydra.runtime.output_dir) / "metrics.json"
        metrics = json.loads(path.read_text())
        missing = [k for k in self.objectives if k not in metrics]
        if missing:
            known = sorted(k for k in metrics if k.startswith("val/"))
            raise AdvrecError(
                f"hydra.sweeper.objectives {missing} are not in {path}; a trial writes {known}"
            )
        return [float(metrics[k]) for k in self.objectives]

    def _check_failures(self, study) -> None:
        from optuna.trial import TrialState

        finished = spent(study)  # a pruned trial counts as finished, not as failed
        failed = sum(
            1
            for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
            if not t.user_attrs.get(INTERRUPTED)
        )
        if finished and failed / finished > self.max_failure_rate:
            raise AdvrecError(
                f"{failed} of {finished} trials failed (max_failure_rate="
                f"{self.max_failure_rate}); see the trial logs under {self.sweep_dir}"
            )

    def _summarise(self, study) -> dict:
        if self.objectives:
            return self._summarise_pareto(study)
        from optuna.trial import TrialState

        if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            raise AdvrecError(
                f"no trial of study {self.study_name!r} finished with a result (see the "
                f"warnings above and the trial logs under {self.sweep_dir}); narrow the space"
            )
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

    def _summarise_pareto(self, study) -> dict:
        """A multi-objective search has no single best trial: its Pareto set (trials no other
        trial beats on every objective) goes to optuna_best.json and pareto.csv."""
        import pandas as pd

        front = sorted(study.best_trials, key=lambda t: t.number)
        rows = [
            {"trial": t.number, **dict(zip(self.objectives, t.values, strict=True)), **t.params}
            for t in front
        ]
        summary = {
            "study": self.study_name,
            "objectives": self.objectives,
            "directions": self.directions,
            "n_trials": spent(study),
            "pareto": rows,
            "trials": [
                {"number": t.number, "state": t.state.name, "values": t.values, "params": t.params}
                for t in study.trials
            ],
        }
        write_json(self.sweep_dir / "optuna_best.json", summary)
        write_csv(self.sweep_dir / "pareto.csv", pd.DataFrame(rows))
        for row in rows:
            log.info("Pareto trial %s", row)
        log.info("%d Pareto trial(s): %s", len(rows), self.sweep_dir / "pareto.csv")
        return summary


def _prune(study, trial, reason: str, level: int) -> None:
    """Record `trial` as PRUNED with its reason (its `pruned_because` attribute)."""
    from optuna.trial import TrialState

    log.log(level, "trial %d pruned: %s", trial.number, reason)
    trial.set_user_attr("pruned_because", str(reason))
    study.tell(trial, state=TrialState.PRUNED)


def _directions(direction: str | Sequence[str], n: int) -> list[str]:
    """One direction per objective: a single one applies to all."""
    if isinstance(direction, str):
        return [direction] * n
    out = [str(d) for d in direction]
    if len(out) != n:
        raise AdvrecError(
            f"hydra.sweeper.direction has {len(out)} entries for {n} objective(s); give one "
            "per objective or a single one for all"
        )
    return out
