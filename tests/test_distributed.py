"""Two CPU processes must give exactly the single-process metrics (uneven user shards)."""

import json

import pytest

from advrec.models.ease import EASE
from tests.helpers import quiet_trainer, run_cli, synthetic_dm


def _test(model, dm, **kw):
    return quiet_trainer(accelerator="cpu", **kw).test(model, datamodule=dm, verbose=False)[0]


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
    dm = synthetic_dm(101, 70, 2000, seed=7, eval_batch_size=16)  # 101 users: uneven shards
    model = EASE(dm.n_users, dm.n_items, lam=20.0)
    model.fit_matrix(dm.train_full_matrix)
    single = _test(model, dm, devices=1)
    double = _test(model, dm, devices=2, strategy="ddp_fork")
    assert single["test/n_users"] + single["test/n_users_without_targets"] == 101
    for key, value in single.items():
        assert double[key] == pytest.approx(value, abs=1e-6), key


@pytest.mark.slow
def test_cfgan_trains_under_ddp_cpu_and_rank0_writes_once(tmp_path):
    run_cli(
        "train",
        "model=cfgan",
        "data=synthetic",
        "trainer=ddp_cpu",
        "trainer.max_epochs=2",
        "model.g_hidden=[32]",
        "model.d_hidden=[16]",
        "logger=csv",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["model"] == "CFGAN" and m["epochs"] == 2
    assert m["refit"] == "train+validation" and m["selected_epoch"] == 2  # refit under DDP too
    assert (tmp_path / "checkpoints" / "final.ckpt").is_file()
