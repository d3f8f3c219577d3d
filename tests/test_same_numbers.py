"""bench/same_numbers.py, the refactors' numbers-unchanged check: its battery must compose
against today's configs, and its comparison must catch a changed metric."""

import pytest

from bench.same_numbers import BATTERY, compare


@pytest.mark.parametrize("name", sorted(BATTERY))
def test_every_battery_run_composes(name):
    from hydra import compose, initialize_config_dir

    from advrec.config import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", [*BATTERY[name], "seed=1"])
    assert cfg.model._target_.startswith("advrec.models.")
    assert cfg.data.name.startswith(("ml100k", "cfgan_ml100k", "irgan_ml100k"))


def test_compare_catches_a_changed_metric_and_ignores_times():
    before = {
        "ease": {
            "test/ndcg@20": 0.4366,
            "epochs": 1,
            "wall_time_s": 3.0,
            "dataset": {"n_users": 9},
        },
        "gone": {"test/ndcg@20": 0.1},
    }
    after = {
        "ease": {"test/ndcg@20": 0.4367, "epochs": 1, "wall_time_s": 9.0, "test/map@20": 0.2,
                 "dataset": {"n_users": 9}},
        "gone": {"error": "exit 1"},
    }  # fmt: skip
    report = compare(before, after)
    assert report["ease"]["differ"] == {"test/ndcg@20": [0.4366, 0.4367]}
    assert report["ease"]["only_second"] == ["test/map@20"]
    assert report["ease"]["shared_keys"] == 3  # ndcg, epochs, dataset.n_users; no time
    assert not report["ease"]["equal"] and not report["gone"]["equal"]
    after["ease"]["test/ndcg@20"] = 0.4366
    assert compare(before, after)["ease"]["equal"]
