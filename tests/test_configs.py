"""Every shipped config composes and passes the checks advrec-train makes before any work:
each file of conf/experiment, conf/tuned, conf/hparams_search, conf/data and conf/model, with
its model instantiated on a tiny shape and its data source's class importable."""

import inspect
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from advrec.config import CONF_DIR
from advrec.run.guards import check_monitor, check_settings, check_targets, model_class
from advrec.run.protocol import Protocol
from tests.helpers import REPO

GROUPS = ("experiment", "tuned", "hparams_search", "data", "model")


def _files(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


CASES = [(g, name) for g in GROUPS for name in _files(g)]


def test_every_group_has_files():
    assert all(_files(g) for g in GROUPS)


@pytest.mark.parametrize("group,name", CASES, ids=[f"{g}={n}" for g, n in CASES])
def test_a_shipped_config_composes_and_builds(group, name):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"{group}={name}"])
    check_targets(cfg, cfg.get("allow_targets") or ())
    check_settings(cfg)
    check_monitor(cfg)
    Protocol.from_config(cfg.protocol)
    get_class(cfg.data.source._target_)  # the source class exists (its data may not here)
    cls = model_class(cfg)
    # a tiny encoded feature matrix: the MovieLens columns, one-hot blocks of 2-4 columns, and
    # a user set (friends) over the 12 users
    blocks = {"gender": [0, 2], "age": [2, 5], "occupation": [5, 9], "friends": [9, 21]}
    extra = {"n_features": 21, "feature_blocks": blocks}
    accepted = inspect.signature(cls.__init__).parameters
    model = instantiate(
        cfg.model,
        n_users=12,
        n_items=max(20, max(cfg.ks)),
        **{k: v for k, v in extra.items() if k in accepted},
        _convert_="all",
    )
    assert model.hparams  # every hyper-parameter landed in the model
    OmegaConf.to_container(cfg.model, resolve=True)  # no dangling interpolation


def _optuna_space(name: str) -> dict:
    """conf/hparams_search/<name>.yaml's sweep as {key: (distribution, lo, hi) | values}."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

    params = OmegaConf.load(Path(CONF_DIR) / "hparams_search" / f"{name}.yaml").hydra.sweeper.params
    parser = OverridesParser.create()
    out = {}
    for key, text in params.items():
        sweep = parser.parse_overrides([f"{key}={text}"])[0]
        if not sweep.is_sweep_override():
            continue  # a fixed value, not part of the space
        v = sweep.value()
        if isinstance(v, ChoiceSweep):
            out[key] = sorted(v.list)
        elif isinstance(v, RangeSweep):
            out[key] = ("int_uniform", v.start, v.stop - 1)
        elif isinstance(v, IntervalSweep):
            kind = "int_uniform" if isinstance(v.start, int) and isinstance(v.end, int) else None
            kind = kind or ("log_uniform_values" if "log" in v.tags else "uniform")
            out[key] = (kind, v.start, v.end)
    return out


def _wandb(name: str) -> dict:
    """A W&B sweep file as W&B reads it (its ${env} / ${args} are W&B's, not OmegaConf's)."""
    return yaml.safe_load((REPO / "sweeps" / f"{name}.yaml").read_text())


def _wandb_space(name: str) -> dict:
    params = _wandb(name)["parameters"]
    return {
        k: sorted(p["values"]) if "values" in p else (p["distribution"], p["min"], p["max"])
        for k, p in params.items()
    }


SEARCHES = sorted(p.stem for p in (REPO / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("name", SEARCHES)
def test_the_wandb_sweep_searches_the_optuna_space(name):
    """Each search space is written twice (Optuna for -m hparams_search, W&B for sweeps/);
    both must describe the same space and optimise the same validation metric."""
    assert _wandb_space(name) == _optuna_space(name)
    sweep = _wandb(name)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"hparams_search={name}"])
    assert sweep["metric"] == {"name": cfg.protocol.monitor, "goal": "maximize"}
    assert f"hparams_search={name}" in sweep["command"]


DIFFREC = [
    "hparams_search=diffrec",
    *(f"tuned={p.stem}" for p in sorted(REPO.glob("conf/tuned/diffrec_*"))),
]


@pytest.mark.parametrize("override", DIFFREC)
def test_diffrec_stops_where_the_released_loop_stops(override):
    """The released main.py checks every 5 epochs and breaks at the top of epoch best + 20:
    the checks at best + 5, 10 and 15 are the last chances, so 3 checks without gain stop it
    (patience 4 trained 5 epochs and a check more)."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[override])
    every = cfg.trainer.check_val_every_n_epoch
    assert every == 5 and cfg.protocol.patience == len(range(every, 20, every)) == 3


def test_the_diffrec_search_can_draw_the_released_two_layer_denoiser():
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["hparams_search=diffrec", "hp.dims=200-600"])
        one = compose("train", overrides=["hparams_search=diffrec", "hp.dims=1000"])
    assert list(cfg.model.hidden) == [200, 600] and list(one.model.hidden) == [1000]
    space = OmegaConf.load(Path(CONF_DIR) / "hparams_search" / "diffrec.yaml").hydra.sweeper
    assert "200-600" in space.params["hp.dims"]
