"""EASE-GAN: it starts at EASE^R's solution (the reconstruction gradient vanishes there), the
ablation never touches D, it keeps beating popularity on planted blocks while the adversary
trains, a killed run resumes to the uninterrupted one's numbers (W is not re-initialised),
and it trains under DDP with the single-process metrics."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from advrec.models.ease import EASE
from advrec.models.easegan import EASEGAN
from advrec.utils.callbacks import ResumePoint
from tests.helpers import (
    ddp_metrics_match_one_process,
    one_line_refusal,
    planted_blocks_ndcg,
    quiet_trainer,
    run_cli,
    synthetic_dm,
)
from tests.helpers.killers import KillAt


@pytest.fixture(scope="module")
def dm():
    return synthetic_dm(60, 40, 900, seed=3, val_fraction=0.1)


def small(dm, **kw):
    params = dict(lam=5.0, d_hidden=[8], batch_size_g=16, batch_size_d=16, lr_g=1e-3, lr_d=1e-2)
    return EASEGAN(dm.n_users, dm.n_items, **{**params, **kw})


def test_starts_at_ease_where_the_reconstruction_gradient_vanishes(dm):
    model = small(dm, adv_weight=0.0)
    model.prepare_fit(dm.fit_data(model.plan()))
    ease = EASE(dm.n_users, dm.n_items, lam=5.0)
    ease.fit_matrix(dm.train_matrix)
    assert torch.allclose(model.generator.weight, ease.B, atol=1e-6)
    h = torch.from_numpy(dm.train_matrix[:9].toarray())
    assert torch.allclose(
        model.score(torch.arange(9), h), ease.score(torch.arange(9), h), atol=1e-5
    )
    # the loss over every training row is EASE^R's objective / n_rows: zero gradient at B
    # (a wrong L2 scale or a diagonal that counts would leave one)
    x = torch.from_numpy(dm.train_matrix.toarray())
    loss, stats = model.g_loss({"x": x, "ids": torch.arange(len(x))})
    assert set(stats) == {"recon"}
    w = model.generator.weight
    objective = ((x - x @ ease.B).pow(2).sum() + 5.0 * ease.B.pow(2).sum()) / len(x)
    assert float(loss.detach()) == pytest.approx(float(objective), rel=1e-5)
    (grad,) = torch.autograd.grad(loss, w)
    moved = small(dm, adv_weight=0.0)
    moved.prepare_fit(dm.fit_data(moved.plan()))
    with torch.no_grad():
        moved.generator.weight.add_(0.01 * torch.randn_like(w))
    away_loss = moved.g_loss({"x": x, "ids": torch.arange(len(x))})[0]
    (away,) = torch.autograd.grad(away_loss, moved.generator.weight)
    assert grad.norm() < 1e-3 * away.norm()


def test_the_ablation_never_trains_d_and_the_diagonal_stays_zero(dm):
    model = small(dm, adv_weight=0.0)
    assert [p.passes for p in model.phases()] == [0, 1]
    d0 = [p.detach().clone() for p in model.discriminator.parameters()]
    quiet_trainer(max_epochs=2, limit_val_batches=0).fit(model, datamodule=dm)
    assert all(torch.equal(a, b) for a, b in zip(d0, model.discriminator.parameters(), strict=True))
    adv = small(dm, adv_weight=1.0)
    quiet_trainer(max_epochs=2, limit_val_batches=0).fit(adv, datamodule=dm)
    assert any(
        not torch.equal(a, b) for a, b in zip(d0, adv.discriminator.parameters(), strict=True)
    )
    for m in (model, adv):
        assert not m.generator.weight.diagonal().any()
        assert float(m.w_drift()) > 0


def test_planted_blocks_beat_popularity_while_the_adversary_trains():
    models = []

    def make(n_users, n_items):
        kw = dict(lam=10.0, adv_weight=5.0, lr_g=1e-3, lr_d=1e-2, ks=(5,))
        models.append(EASEGAN(n_users, n_items, **kw))
        return models[-1]

    ndcg, toppop = planted_blocks_ndcg(make, epochs=10)
    assert float(models[0].w_drift()) > 0.05  # the adversary moved W away from EASE^R's
    assert ndcg > toppop + 0.3, (ndcg, toppop)


def test_sigterm_mid_epoch_then_resume_ends_like_an_uninterrupted_run(dm, tmp_path):
    """A resumed fit keeps the checkpoint's W (prepare_fit runs again on resume)."""

    def run(callbacks=(), ckpt=None):
        torch.manual_seed(0)
        model = small(dm, adv_weight=1.0)
        t = quiet_trainer(max_epochs=3, limit_val_batches=0, callbacks=list(callbacks))
        t.fit(model, datamodule=dm, ckpt_path=ckpt)
        return t.test(model, datamodule=dm, verbose=False)[0], model

    whole, a = run()
    with pytest.raises(SystemExit):
        run([KillAt(epoch=1, at=2), ResumePoint(dirpath=tmp_path, filename="last")])
    resumed, b = run(ckpt=str(tmp_path / "last.ckpt"))
    assert torch.equal(a.generator.weight, b.generator.weight)
    assert resumed == whole


def test_cli_run_logs_what_d_changes_then_eval_reproduces_it(tmp_path):
    run_cli(
        "train",
        "model=easegan",
        "data=synthetic",
        "model.lam=50",
        "model.d_hidden=[16]",
        "trainer.max_epochs=3",
        "logger=csv",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["model"] == "EASEGAN" and m["refit"] == "train+validation"
    curve = pd.read_csv(tmp_path / "run" / "csv" / "metrics.csv")
    for key in ("w_drift", "topk_popularity", "topk_coverage", "topk_in_condition", "adv"):
        values = curve[f"train/{key}"].dropna()
        assert len(values) >= 3 and np.isfinite(values).all(), key
    assert (curve["train/w_drift"].dropna() > 0).all()
    assert curve["train/topk_coverage"].dropna().between(0, 1).all()
    run_cli("eval", f"ckpt_path={m['checkpoint']}", f"hydra.run.dir={tmp_path / 'e'}", cwd=tmp_path)
    again = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert again["test/ndcg@20"] == pytest.approx(m["test/ndcg@20"], abs=1e-7)


def test_search_chooses_the_start_as_easer_grid_does_and_the_refit_keeps_it(tmp_path):
    """`model.search={lam: [...]}` scores each lam's EASE^R start on this run's validation,
    the same scores EASE^R's grid gets, and G trains (and is refit) from the chosen one."""
    grid = "model.search={lam:[1,30,3000]}"
    runs = {}
    for model in ("ease", "easegan"):
        extra = ["model.d_hidden=[8]", "trainer.max_epochs=2"] if model == "easegan" else []
        run_cli(
            "train", f"model={model}", "data=synthetic", grid, *extra, "logger=csv",
            f"hydra.run.dir={tmp_path / model}", cwd=tmp_path,
        )  # fmt: skip
        runs[model] = json.loads((tmp_path / model / "metrics.json").read_text())
    ease, gan = runs["ease"], runs["easegan"]
    assert [s["lam"] for s in gan["selection"]] == [1, 30, 3000]
    for a, b in zip(ease["selection"], gan["selection"], strict=True):
        assert b["val/ndcg@10"] == pytest.approx(a["val/ndcg@10"], abs=1e-6)
    assert gan["hparams"]["lam"] == ease["hparams"]["lam"]
    assert gan["refit"] == "train+validation" and gan["epochs"] == 2
    # the lams score differently here, or the test could not tell a choice from a default
    assert len({round(s["val/ndcg@10"], 6) for s in gan["selection"]}) == 3


def test_search_over_anything_but_the_start_is_refused(tmp_path):
    bad = "model.search={adv_weight:[0,1]}"
    proc = run_cli("train", "model=easegan", "data=synthetic", bad, cwd=tmp_path, check=False)
    one_line_refusal(proc, "model.search", "hparams_search=easegan")


@pytest.mark.parametrize("bad", ["model.lam=0", "model.adv_weight=-1"])
def test_bad_settings_are_refused_in_one_line(bad, tmp_path):
    proc = run_cli("train", "model=easegan", "data=synthetic", bad, cwd=tmp_path, check=False)
    one_line_refusal(proc, bad.split("=")[0])


@pytest.mark.slow
def test_ddp_cpu_training_gives_the_metrics_one_process_computes(tmp_path):
    m = ddp_metrics_match_one_process(
        tmp_path, "model=easegan", "data=synthetic", "trainer.max_epochs=2", "model.lam=50",
        "model.d_hidden=[16]",
    )  # fmt: skip
    assert m["model"] == "EASEGAN" and m["epochs"] == 2
