"""Two CPU processes must give exactly the single-process metrics (uneven user shards)."""

import json

import pytest
from lightning import Trainer

from advrec.data.datamodule import RecDataModule
from advrec.data.sources import Synthetic
from advrec.models.ease import EASE
from tests.conftest import run_cli


def _test(model, dm, **kw):
    t = Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        **kw,
    )
    return t.test(model, datamodule=dm, verbose=False)[0]


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
    dm = RecDataModule(
        source=Synthetic(n_users=101, n_items=70, n_interactions=2000, seed=7),  # odd: uneven
        split={"method": "random_holdout", "test_fraction": 0.2},
        eval_batch_size=16,
        seed=0,
    )
    dm.setup()
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
    assert (tmp_path / "checkpoints" / "final.ckpt").is_file()
