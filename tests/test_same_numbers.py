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


def _script(*args: str, cwd):
    import subprocess
    import sys

    from tests.helpers import REPO

    cmd = [sys.executable, str(REPO / "bench" / "same_numbers.py"), *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_a_src_that_is_not_a_checkout_is_refused_before_anything_runs(tmp_path):
    """A wrong --src would run the installed advrec: a 'before' equal to 'after' by mistake."""
    proc = _script("run", "--out", str(tmp_path / "out"), "--src", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not a checkout's src/" in lines[0]
    assert not (tmp_path / "out").exists()


def test_compare_exits_1_on_a_difference_and_names_a_bad_file(tmp_path):
    import json

    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps({"ease": {"test/ndcg@20": 0.4}}))
    second.write_text(json.dumps({"ease": {"test/ndcg@20": 0.5}}))
    proc = _script("compare", str(first), str(second), cwd=tmp_path)
    assert proc.returncode == 1 and json.loads(proc.stdout)["all_equal"] is False
    assert _script("compare", str(first), str(first), cwd=tmp_path).returncode == 0
    proc = _script("compare", str(first), str(tmp_path / "nope.json"), cwd=tmp_path)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert "nope.json is not a battery.json" in proc.stderr


def test_runs_with_no_metric_in_common_are_not_equal():
    assert not compare({"x": {"wall_time_s": 1.0}}, {"x": {"wall_time_s": 1.0}})["x"]["equal"]
