"""The Optuna sweeper (search-space grammar, storages, interrupted-and-resumed sweep) and the
W&B sweep files."""

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from advrec.config import CONF_DIR
from advrec.sweep import INTERRUPTED, open_storage, search_space
from tests.helpers import REPO, run_cli

SEARCHES = sorted(p.stem for p in (REPO / "conf" / "hparams_search").glob("*.yaml"))


def test_search_space_grammar():
    space, fixed = search_space(
        [
            "a=int(interval(10, 90))",
            "f=interval(10, 90)",
            "b=tag(log, interval(1e-4, 5e-3))",
            "c=range(1, 5)",
            "d=choice(50, 100)",
            "e=interval(0.0, 1.0)",
            "model.search=null",
        ]
    )
    assert space["a"] == IntDistribution(10, 90)
    assert space["b"] == FloatDistribution(1e-4, 5e-3, log=True)
    assert space["c"] == IntDistribution(1, 4)  # range stops before its end, as in Hydra
    assert space["d"] == CategoricalDistribution([50, 100])
    assert space["e"] == FloatDistribution(0.0, 1.0)
    assert space["f"] == FloatDistribution(10.0, 90.0)  # Hydra's intervals are float unless int()
    assert fixed == {"model.search": "null"}


@pytest.mark.parametrize("url", ["journal", "sqlite"])
def test_storages_persist_a_study_with_the_installed_versions(tmp_path, url):
    import optuna

    where = str(tmp_path / "s.journal") if url == "journal" else f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(study_name="s", storage=open_storage(where), direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    again = optuna.load_study(study_name="s", storage=open_storage(where))
    assert [t.params for t in again.trials] == [t.params for t in study.trials]


@pytest.mark.parametrize("name", SEARCHES)
def test_every_search_space_composes_into_valid_overrides(name):
    """Each hparams_search config composes, and its lowest values are valid overrides."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        base = compose("train", overrides=[f"hparams_search={name}"], return_hydra_config=True)
        space, fixed = search_space(
            [f"{k}={'null' if v is None else v}" for k, v in base.hydra.sweeper.params.items()]
        )
        assert len(space) >= 1
        lows = [
            f"{k}={d.choices[0] if isinstance(d, CategoricalDistribution) else d.low}"
            for k, d in space.items()
        ]
        cfg = compose("train", overrides=[f"hparams_search={name}", *lows])
        model = name.split("_")[0]  # a search is named after its model
        assert cfg.model._target_.lower().endswith(model)
        for key in space:
            node = cfg
            for part in key.split("."):
                node = node[part]  # every searched key exists in the composed config


def _sweep_cmd(sweep: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "advrec.train",  # no -m: a search config is a multirun by itself
        "data=synthetic",
        "data.source.n_users=150",
        "data.source.n_items=80",
        "data.source.n_interactions=2000",
        "model=ease",
        "hparams_search=ease",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.sampler.n_startup_trials=2",
        "logger=none",
        f"hydra.sweep.dir={sweep}",
    ]


def test_interrupted_optuna_sweep_resumes_and_finishes_its_budget(tmp_path):
    import optuna
    from optuna.trial import TrialState

    sweep = tmp_path / "sweep"
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.Popen(
        _sweep_cmd(sweep),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while not (sweep / "1_local").exists() and time.time() < deadline:
        assert proc.poll() is None, "the sweep ended before it could be interrupted"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # trial 1 is running: the worst moment to die
    proc.wait()
    assert (sweep / "0_local" / "metrics.json").is_file()
    assert not (sweep / "1_local" / "metrics.json").exists()

    result = run_cli("train", *_sweep_cmd(sweep)[3:], cwd=tmp_path)  # the same command again
    assert "1 interrupted trial(s) queued again" in result.stdout + result.stderr

    study = optuna.load_study(
        study_name="ease_synthetic", storage=open_storage(sweep / "optuna.journal")
    )
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 3  # the budget, counted across both invocations
    params = [t.params["model.lam"] for t in complete]
    assert len(set(params)) == 3  # nothing ran twice
    cut = study.trials[1]
    assert cut.state == TrialState.FAIL and cut.user_attrs[INTERRUPTED]
    assert cut.params in [t.params for t in complete]  # ...but the cut-off one got its turn
    assert len(list(sweep.glob("*/metrics.json"))) == 3
    assert (sweep / "optuna_best.yaml").is_file()

    other = [a.replace("n_users=150", "n_users=151") for a in _sweep_cmd(sweep)[3:]]
    proc = run_cli("train", *other, cwd=tmp_path, check=False)  # not the same sweep
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "advrec: error: study 'ease_synthetic' was started with the overrides" in proc.stderr


WANDB_SWEEPS = sorted((REPO / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("path", WANDB_SWEEPS, ids=lambda p: p.stem)
def test_wandb_sweep_files_are_valid_hydra_commands(path):
    spec = yaml.safe_load(path.read_text())
    assert spec["method"] == "bayes"
    assert spec["metric"] == {"name": "val/ndcg@10", "goal": "maximize"}
    assert "${args_no_hyphens}" in spec["command"]
    assert "hydra.mode=RUN" in spec["command"]  # one run per agent call, not a search
    fixed = [a for a in spec["command"] if "=" in a and not a.startswith("$")]
    overrides = []
    for key, p in spec["parameters"].items():
        value = p["values"][0] if "values" in p else p.get("min", p.get("value"))
        overrides.append(f"{key}={value}")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[*fixed, *overrides])
    for key in spec["parameters"]:
        node = cfg
        for part in key.split("."):
            node = node[part]


def test_the_wandb_sweeps_cover_the_optuna_spaces():
    assert sorted(p.stem for p in WANDB_SWEEPS) == SEARCHES


def test_too_many_failed_trials_stop_the_sweep(tmp_path):
    import optuna
    from optuna.trial import TrialState

    from advrec.errors import AdvrecError
    from advrec.sweep import OptunaSearch

    search = OptunaSearch(max_failure_rate=0.5)
    search.sweep_dir = tmp_path
    study = optuna.create_study(direction="maximize")
    for state in (TrialState.COMPLETE, TrialState.FAIL):
        trial = study.ask({"x": FloatDistribution(0, 1)})
        study.tell(trial, 0.5 if state == TrialState.COMPLETE else None, state=state)
    search._check_failures(study)  # 1 of 2 failed: at the limit, goes on
    study.tell(study.ask({"x": FloatDistribution(0, 1)}), state=TrialState.FAIL)
    with pytest.raises(AdvrecError, match="2 of 3 trials failed"):
        search._check_failures(study)


@pytest.mark.parametrize(
    "sampler,extra,expected",
    [
        ("random", ["hydra.sweeper.n_trials=3"], "RandomSampler"),
        ("grid", ["model.lam=choice(10,100,1000)"], "GridSampler"),
    ],
)
def test_a_search_without_dash_m_with_another_sampler(sampler, extra, expected, tmp_path):
    """No -m: the search config is a multirun by itself; the sampler is chosen with
    hydra-optuna-sweeper's spelling; a grid stops after its last combination; trials never
    evaluate the test split."""
    import json

    import optuna

    sweep = tmp_path / "sweep"
    args = [a for a in _sweep_cmd(sweep)[3:] if "n_trials" not in a and "n_startup" not in a]
    proc = run_cli(
        "train",
        *args,
        f"hydra/sweeper/sampler={sampler}",
        "hydra.sweeper.sampler.seed=1",
        *extra,
        cwd=tmp_path,
    )
    assert f"({expected})" in proc.stdout + proc.stderr
    study = optuna.load_study(
        study_name="ease_synthetic", storage=open_storage(sweep / "optuna.journal")
    )
    lams = [t.params["model.lam"] for t in study.trials]
    assert len(lams) == 3 and len(set(lams)) == 3
    if sampler == "grid":
        assert sorted(lams) == [10, 100, 1000]
    for path in sweep.glob("*/metrics.json"):
        m = json.loads(path.read_text())
        assert "val/ndcg@10" in m and not any(k.startswith("test/") for k in m)


def test_settings_that_leave_no_result_prune_their_trial_and_the_search_goes_on(tmp_path):
    """A drawn combination the model refuses (DiffRec's noise bounds the wrong way round)
    is one pruned trial, with its reason, not the end of the search."""
    import json

    sweep = tmp_path / "sweep"
    run_cli(
        "train", "data=synthetic", "data.source.n_users=60", "data.source.n_items=40",
        "data.source.n_interactions=600", "hparams_search=diffrec",
        "hydra/sweeper/sampler=grid", "model.noise_min=choice(0.001)",
        "model.noise_max=choice(0.0005,0.02)", "hp.dims=choice(16)",
        "model.steps=choice(5)", "model.noise_scale=choice(0.1)", "model.lr=choice(0.001)",
        "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=1", "logger=none",
        f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    best = json.loads((sweep / "optuna_best.json").read_text())
    states = {t["params"]["model.noise_max"]: t["state"] for t in best["trials"]}
    assert states == {0.0005: "PRUNED", 0.02: "COMPLETE"}
    assert best["n_trials"] == 2 and best["best_params"]["model.noise_max"] == 0.02


def test_an_interrupted_trial_is_retried_once_then_left_failed():
    import optuna
    from optuna.trial import TrialState

    from advrec.sweep import reclaim_interrupted

    space = {"x": optuna.distributions.FloatDistribution(0, 1)}
    study = optuna.create_study(direction="maximize")
    study.ask(space)  # left RUNNING: cut off
    assert reclaim_interrupted(study, max_retries=1) == (1, 0)
    again = study.ask(space)  # the queued retry, with the same parameters
    assert again.params == study.trials[0].params
    assert reclaim_interrupted(study, max_retries=1) == (0, 1)  # cut off a second time
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]
    assert study.get_trials(states=(TrialState.WAITING,)) == []


def test_ctrl_c_in_a_trial_names_the_command_that_resumes_the_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    kill = [
        "+callbacks.kill._target_=tests.helpers.killers.KillAt",
        "+callbacks.kill.epoch=null",
        "+callbacks.kill.sig=SIGINT",
        "+callbacks.kill.job=1",
        "allow_targets=[tests.helpers.killers.]",
    ]
    args = [*_sweep_cmd(sweep)[3:], *kill]
    proc = run_cli("train", *args, cwd=tmp_path, env={"PYTHONPATH": str(REPO)}, check=False)
    assert proc.returncode == 130 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("advrec: stopped by")]
    assert "Ctrl-C" in line and "tried again" in line
    assert line.endswith(shlex.join(["advrec-train", *args]))
    assert (sweep / "0_local" / "metrics.json").is_file()
    assert not (sweep / "1_local" / "metrics.json").exists()


def test_a_multi_objective_search_writes_its_pareto_set(tmp_path):
    """NDCG@10 against coverage@10: every trial on the written Pareto set is beaten by no
    other trial on both, and every trial off it is."""
    import json

    import pandas as pd

    sweep = tmp_path / "sweep"
    args = [a for a in _sweep_cmd(sweep)[3:] if "n_trials" not in a and "n_startup" not in a]
    proc = run_cli(
        "train",
        *args,
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.n_trials=6",
        "model.lam=tag(log, interval(0.01, 100000))",  # wide: NDCG and coverage pull apart
        "hydra.sweeper.objectives=[val/ndcg@10,val/coverage@10]",
        cwd=tmp_path,
    )
    assert "Pareto trial(s)" in proc.stdout + proc.stderr
    values = {}
    for path in sweep.glob("*_local/metrics.json"):
        m = json.loads(path.read_text())
        values[int(path.parent.name.split("_")[0])] = (m["val/ndcg@10"], m["val/coverage@10"])
    assert len(values) == 6

    def beaten(a):
        return any(b[0] >= a[0] and b[1] >= a[1] and b != a for b in values.values())

    front = pd.read_csv(sweep / "pareto.csv")
    assert sorted(front["trial"]) == sorted(t for t, v in values.items() if not beaten(v))
    row = front.iloc[0]
    assert (row["val/ndcg@10"], row["val/coverage@10"]) == values[int(row["trial"])]
    best = json.loads((sweep / "optuna_best.json").read_text())
    assert best["objectives"] == ["val/ndcg@10", "val/coverage@10"] and best["pareto"]


# -- pruning ---------------------------------------------------------------------------------
class _Strategy:
    def broadcast(self, obj, src=0):
        return obj


class _Trainer:
    """What PruningCallback reads of a Trainer."""

    sanity_checking, is_global_zero, strategy = False, True, _Strategy()
    state = type("State", (), {"fn": "fit"})()

    def __init__(self, value):
        self.callback_metrics = {"val/ndcg@10": value}


def test_the_median_pruner_stops_a_trial_whose_curve_is_worse():
    import optuna

    from advrec.errors import TrialPruned
    from advrec.pruning import PruningCallback
    from advrec.sweep import make_pruner
    from advrec.utils.compat import trial_handle

    pruner = make_pruner({"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 2,
                          "n_warmup_steps": 0})  # fmt: skip
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for curve in ([0.10, 0.20, 0.30], [0.12, 0.22, 0.32]):  # two finished trials
        t = study.ask()
        cb = PruningCallback(trial_handle(study, t.number), "val/ndcg@10")
        for v in curve:
            cb.on_validation_end(_Trainer(v), None)
        study.tell(t, curve[-1])
    good = study.ask()
    cb = PruningCallback(trial_handle(study, good.number), "val/ndcg@10")
    cb.on_validation_end(_Trainer(0.15), None)  # above the median at check 1: goes on
    bad = study.ask()
    cb = PruningCallback(trial_handle(study, bad.number), "val/ndcg@10")
    with pytest.raises(TrialPruned, match="validation check 1"):
        cb.on_validation_end(_Trainer(0.01), None)
    assert study.trials[bad.number].intermediate_values == {1: 0.01}


def test_a_pruned_search_leaves_no_result_of_a_pruned_trial_and_resumes(tmp_path):
    """Through advrec-train as users type it: trials the median pruner stops have no
    metrics.json and no checkpoints, count toward the budget, and the same command with a
    larger budget runs only the new trials."""
    import json

    import optuna
    from optuna.trial import TrialState

    sweep = tmp_path / "sweep"
    args = [
        "data=synthetic", "data.source.n_users=150", "data.source.n_items=80",
        "data.source.n_interactions=2000", "model=bpr", "hparams_search=bpr",
        "hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_startup_trials=1",
        "hydra.sweeper.pruner.n_warmup_steps=0", "hydra/sweeper/sampler=random",
        "model.lr=tag(log, interval(1e-5, 0.05))", "trainer.max_epochs=4",
        "trainer.check_val_every_n_epoch=1", "logger=none", f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    run_cli("train", *args, "hydra.sweeper.n_trials=6", cwd=tmp_path)
    study = optuna.load_study(
        study_name="bpr_synthetic", storage=open_storage(sweep / "optuna.journal")
    )
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned, [t.intermediate_values for t in study.trials]  # some curve fell behind
    for t in pruned:
        run = sweep / f"{t.number}_local"
        assert not (run / "metrics.json").exists() and not (run / "checkpoints").exists()
        assert "pruned at validation check" in t.user_attrs["pruned_because"]
        assert len(t.intermediate_values) < 4
    for t in study.trials:
        assert len(t.intermediate_values) <= 4  # one per epoch, no re-validation's report
        if t.state == TrialState.COMPLETE:
            assert (sweep / f"{t.number}_local" / "metrics.json").is_file()
    best = json.loads((sweep / "optuna_best.json").read_text())
    assert best["n_trials"] == 6
    before = [(t.state, t.params) for t in study.trials]

    run_cli("train", *args, "hydra.sweeper.n_trials=8", cwd=tmp_path)
    study = optuna.load_study(
        study_name="bpr_synthetic", storage=open_storage(sweep / "optuna.journal")
    )
    assert len(study.trials) == 8  # the first six were not run again
    assert [(t.state, t.params) for t in study.trials[:6]] == before


def test_a_multi_objective_search_refuses_a_pruner_in_one_line(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli("train", *_sweep_cmd(sweep)[3:], "hydra/sweeper/pruner=median",
                   "hydra.sweeper.objectives=[val/ndcg@10,val/coverage@10]",
                   cwd=tmp_path, check=False)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "multi-objective search cannot prune" in proc.stderr
    assert not list(sweep.glob("*_local"))


def test_the_journal_opens_in_a_fresh_process(tmp_path):
    """What optuna-dashboard <sweep dir>/optuna.journal does first: load every study."""
    import optuna

    study = optuna.create_study(study_name="s", storage=open_storage(tmp_path / "optuna.journal"))
    study.enqueue_trial({"x": 0.5})
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    code = (
        "import optuna; from optuna.storages.journal import JournalFileBackend as B; "
        f"s = optuna.storages.JournalStorage(B({str(tmp_path / 'optuna.journal')!r})); "
        "print([(x.study_name, x.n_trials) for x in optuna.get_all_study_summaries(s)])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[('s', 2)]"


def test_a_pre_training_does_not_report_to_the_pruned_trial(tmp_path):
    """IRGAN starts from a BPR pre-training with validation checks of its own: only IRGAN's
    checks are the trial's curve (the pre-training's would take its first steps)."""
    import optuna

    sweep = tmp_path / "sweep"
    run_cli(
        "train", "data=synthetic", "data.source.n_users=80", "data.source.n_items=50",
        "data.source.n_interactions=1000", "pretrain=bpr_dns", "hparams_search=irgan",
        "hydra/sweeper/pruner=median", "hydra/sweeper/sampler=random",
        "hydra.sweeper.n_trials=1", "model.dim=choice(5)", "model.lr_g=choice(0.001)",
        "model.lr_d=choice(0.001)", "model.temperature=choice(1.0)", "trainer.max_epochs=3",
        "trainer.check_val_every_n_epoch=1",
        "pretrain.trainer.max_epochs=2", "pretrain.trainer.check_val_every_n_epoch=1",
        "logger=none", f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    study = optuna.load_study(
        study_name="irgan_synthetic", storage=open_storage(sweep / "optuna.journal")
    )
    (trial,) = study.trials
    # IRGAN's three checks: not the pre-training's, not the protocol's re-validation
    assert sorted(trial.intermediate_values) == [1, 2, 3]


@pytest.mark.parametrize(
    "bad, said",
    [
        ("hydra.sweeper.pruner.n_startup_trials=-3", "n_startup_trials=-3"),
        ("+hydra.sweeper.pruner.bogus=1", "unexpected keyword argument 'bogus'"),
    ],
)
def test_a_bad_pruner_setting_is_one_line_and_starts_nothing(tmp_path, bad, said):
    sweep = tmp_path / "sweep"
    proc = run_cli("train", *_sweep_cmd(sweep)[3:], "hydra/sweeper/pruner=median", bad,
                   cwd=tmp_path, check=False)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("advrec: error")]
    assert "hydra.sweeper.pruner" in line and said in line
    assert not sweep.exists() or not list(sweep.iterdir())
