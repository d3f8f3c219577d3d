"""debug=fdr|limit|overfit|profiler: quick checks that run through the real entry point,
land apart from results, say what they are, and are refused as results by advrec-report."""

from __future__ import annotations

import json
import re

import pytest

from tests.helpers import data_args, run_cli

BPR = ["model=bpr"]


@pytest.mark.parametrize("preset", ["fdr", "limit", "overfit", "profiler"])
def test_a_debug_run_is_marked_and_never_a_result(preset, tiny, tmp_path):
    root, _ = tiny
    extra = ["data.overfit_rows=10"] if preset == "overfit" else []  # tiny has 50 users
    proc = run_cli("train", *data_args(root), *BPR, f"debug={preset}", *extra, cwd=tmp_path)
    (metrics,) = (tmp_path / "outputs" / "debug" / "runs").glob("*/metrics.json")
    assert not (tmp_path / "outputs" / "train").exists()  # not beside real runs
    m = json.loads(metrics.read_text())
    assert m["debug"] == preset
    assert f"DEBUG RUN (debug={preset}), not a result" in proc.stdout
    assert "_target_: advrec.models.bpr.BPR" in proc.stdout  # the config is shown
    report = run_cli("report", f"runs=[{tmp_path / 'outputs'}]", cwd=tmp_path, check=False)
    assert report.returncode == 2 and "only debug runs" in report.stderr
    if preset == "fdr":
        assert m["epochs"] == 1
    if preset == "limit":
        assert m["epochs"] == 3 and m["selected_epoch"] in (1, 2, 3)
    if preset == "profiler":
        assert (metrics.parent / "fit-profile.txt").read_text().count("training_step") >= 1
    if preset == "overfit":  # the same rows for 20 epochs: the loss falls
        losses = [
            float(x) for x in re.findall(r"^\[BPR\] epoch \d+/20  loss (\S+)", proc.stdout, re.M)
        ]
        assert len(losses) == 20 and losses[-1] < losses[0]
        assert m["refit"] is None


def test_overfit_rows_trains_every_phase_on_the_same_few_rows():
    from advrec.data.batches import Phase, Plan
    from tests.helpers import synthetic_dm

    dm = synthetic_dm(60, 30, 600, overfit_rows=7)
    plan = Plan(rows="users", phases=(Phase("d", 4, 2), Phase("g", 3, 1)))
    seen = {}
    for batch in dm.train_dataloader(plan):
        seen.setdefault(batch["phase"], set()).update(batch["ids"].tolist())
    assert seen["d"] == seen["g"]
    seen = seen["d"]
    assert seen == set(dm.train_rows("users").tolist()) and len(seen) == 7
