"""Two CPU processes must give exactly the single-process metrics (uneven user shards)."""

import json

import pandas as pd
import pytest

from advrec.metrics.per_user import read_per_user
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


# -- every model through advrec-train under trainer=ddp_cpu --------------------------------
# closed-form and exact-solve models: the same numbers as one process (each process fits the
# same data; iALS exchanges each step's user solutions); trained models: they run, rank 0
# writes. Features on, so GroupPop runs too (the other models ignore them).
EXACT = ["ease", "itemknn", "userknn", "rp3beta", "slim", "pop", "grouppop", "ials"]
TRAINED = ["cfgan", "bpr", "multvae", "diffrec", "ganmf", "easegan", "irgan", "gar", "dropoutnet"]
SYNTH = [
    "data=synthetic",
    "data.source.n_users=303",  # odd: uneven evaluation and training shards
    "data.source.n_items=120",
    "data.source.n_interactions=4000",
    "data.source.with_features=true",
    "protocol=validated",
    "logger=csv",
]


def _multirun(tmp_path, name: str, *overrides: str) -> dict[str, dict]:
    """advrec-train -m as a user types it (no pinned sweep dir); metrics.json by model."""
    cwd = tmp_path / name
    cwd.mkdir()
    run_cli("train", "-m", *overrides, cwd=cwd, timeout=1200)
    found = {}
    for path in cwd.glob("multirun/*/*/metrics.json"):
        m = json.loads(path.read_text())
        found[m["model"]] = {**m, "per_user": read_per_user(path.parent / "per_user_test.parquet")}
        ckpts = sorted(p.name for p in (path.parent / "checkpoints").iterdir())
        assert "final.ckpt" in ckpts and not any("-v" in c for c in ckpts), ckpts
    return found


@pytest.mark.slow
def test_every_exact_model_under_ddp_cpu_equals_one_process(tmp_path):
    models = f"model={','.join(EXACT)}"
    ddp = _multirun(tmp_path, "ddp", *SYNTH, models, "trainer=ddp_cpu", "trainer.max_epochs=3")
    one = _multirun(tmp_path, "one", *SYNTH, models, "trainer.max_epochs=3")
    assert len(ddp) == len(EXACT) and set(ddp) == set(one)
    for name, m in ddp.items():
        keys = [k for k in m if k.startswith(("val/", "test/"))]
        assert len(keys) > 30 and m["refit"] == "train+validation", name
        for key in keys:
            assert m[key] == pytest.approx(one[name][key], abs=1e-6), (name, key)
        assert m["selected_epoch"] == one[name]["selected_epoch"], name
        # rank 0 gathered every process's users: the same per-user file as one process
        got, want = m["per_user"], one[name]["per_user"]
        assert list(got["user"]) == list(want["user"]) and len(got) == m["test/n_users"], name
        pd.testing.assert_frame_equal(got, want, atol=1e-6, check_exact=False)


@pytest.mark.slow
def test_a_closed_form_grid_search_under_ddp_cpu_chooses_and_scores_as_one_process(tmp_path):
    args = [*SYNTH, "model=ease", "model.search={lam:[1,30,1000]}"]
    (ddp,) = _multirun(tmp_path, "ddp", *args, "trainer=ddp_cpu").values()
    (one,) = _multirun(tmp_path, "one", *args).values()
    assert [s["lam"] for s in ddp["selection"]] == [1, 30, 1000]
    for got, want in zip(ddp["selection"], one["selection"], strict=True):
        assert got["val/ndcg@10"] == pytest.approx(want["val/ndcg@10"], abs=1e-6)
    assert ddp["hparams"]["lam"] == one["hparams"]["lam"]
    for key in (k for k in one if k.startswith("test/")):
        assert ddp[key] == pytest.approx(one[key], abs=1e-6), key


@pytest.mark.slow
def test_every_trained_model_runs_under_ddp_cpu_and_rank0_writes(tmp_path):
    small = {  # options differ between models: one run each
        "cfgan": ["model.g_hidden=[16]", "model.d_hidden=[8]"],
        "irgan": ["model.d_epochs=2", "model.g_epochs=2"],
        "gar": ["model.dim=8", "model.g_hidden=[16]", "model.d_hidden=[16]"],
        "dropoutnet": ["model.dim=8", "model.hidden=[16]", "model.rank=8"],
    }
    found = {}
    for model in TRAINED:
        args = [*SYNTH, f"model={model}", "trainer=ddp_cpu", "trainer.max_epochs=1"]
        found.update(_multirun(tmp_path, model, *args, *small.get(model, [])))
    assert len(found) == len(TRAINED)
    for name, m in found.items():
        assert m["refit"] == "train+validation" and m["selected_epoch"] == 1, name
        assert m["test/n_users"] + m["test/n_users_without_targets"] == m["dataset"]["n_users"]
