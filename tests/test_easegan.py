"""EASE-GAN: W = B + Delta starts at EASE^R's solution, its loss is EASE^R's objective's exact
excess over B (zero gradient at the start in every batch, so the ablation is EASE^R), the
ablation never touches D, it keeps beating popularity on planted blocks while the adversary
trains, a checkpoint holds Delta and the sparse training rows (never B), a killed run resumes
to the uninterrupted one's numbers, and it trains under DDP with the single-process metrics."""

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

RANKS = [1, 4]


@pytest.fixture(scope="module")
def dm():
    return synthetic_dm(60, 40, 900, seed=3, val_fraction=0.1)


def small(dm, **kw):
    params = dict(lam=5.0, d_hidden=[8], batch_size_g=16, batch_size_d=16, lr_g=1e-3, lr_d=1e-2)
    return EASEGAN(dm.n_users, dm.n_items, **{**params, **kw})


def started(dm, **kw) -> EASEGAN:
    model = small(dm, **kw)
    model.prepare_fit(dm.fit_data(model.plan()))
    return model


@pytest.mark.parametrize("rank", RANKS)
def test_starts_at_ease_with_a_zero_gradient_in_every_batch(dm, rank):
    model = started(dm, adv_weight=0.0, rank=rank)
    ease = EASE(dm.n_users, dm.n_items, lam=5.0)
    ease.fit_matrix(dm.train_matrix)
    assert torch.equal(model.generator.base, ease.B)
    h = torch.from_numpy(dm.train_matrix[:9].toarray())
    assert torch.allclose(
        model.score(torch.arange(9), h), ease.score(torch.arange(9), h), atol=1e-6
    )
    # a minibatch of EASE^R's objective has a gradient at B (only the full sum vanishes);
    # the excess has none, in any batch: Adam cannot move G without the adversary
    x = torch.from_numpy(dm.train_matrix.toarray())
    params = list(model.delta.parameters())
    for rows in (slice(0, 7), slice(7, 23), slice(None)):
        loss, stats = model.g_loss({"x": x[rows], "ids": torch.arange(len(x))[rows]})
        assert set(stats) == {"excess"} and float(loss.detach()) == 0.0
        assert all(not g.any() for g in torch.autograd.grad(loss, params))


@pytest.mark.parametrize("rank", RANKS)
def test_the_loss_is_the_exact_excess_of_easer_objective_over_b(dm, rank):
    """f(B + Delta) - f(B) = (||X Delta||^2 + lam ||Delta||^2) / n for any zero-diagonal Delta:
    B must be EASE^R's minimiser and ||Delta||^2 (low rank: from r x r products) exact."""
    model = started(dm, adv_weight=0.0, rank=rank)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.delta.parameters():
            p.copy_(0.1 * torch.randn_like(p))
    rows = torch.from_numpy(dm.fit_data(model.plan()).row_ids)
    x = torch.from_numpy(dm.train_matrix.toarray())[rows].double()
    b = model.generator.base.double()
    delta = model.delta(torch.eye(dm.n_items)).double()  # Delta itself: e_i Delta = row i
    assert delta.diagonal().abs().max() < 1e-6  # u_i . v_i rounds apart from (U V^T)_ii

    def f(w):
        return float(((x - x @ w).pow(2).sum() + 5.0 * w.pow(2).sum()) / len(x))

    loss, _ = model.g_loss({"x": x.float(), "ids": rows})
    assert float(loss) == pytest.approx(f(b + delta) - f(b), rel=1e-4)
    assert float(loss) > 0


def test_the_ablation_through_the_entry_point_scores_exactly_as_easer(tmp_path):
    """adv_weight=0: trained for epochs, chosen on validation, refit, tested: EASE^R's metrics
    (before W = B + Delta, Adam's minibatch noise moved W and the ablation drifted)."""
    runs = {}
    for name, extra in (("ease", []), ("easegan", ["model.adv_weight=0", "trainer.max_epochs=3"])):
        run_cli(
            "train", f"model={name}", "data=synthetic", "model.lam=50", *extra,
            f"hydra.run.dir={tmp_path / name}", cwd=tmp_path,
        )  # fmt: skip
        runs[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    assert runs["easegan"]["epochs"] >= 1 and runs["easegan"]["refit"] == "train+validation"
    keys = [k for k in runs["ease"] if k.startswith("test/")]
    assert keys and all(
        runs["easegan"][k] == pytest.approx(runs["ease"][k], abs=1e-6) for k in keys
    )


@pytest.mark.parametrize("rank", RANKS)
def test_the_ablation_never_trains_d_and_the_diagonal_stays_zero(dm, rank):
    model = small(dm, adv_weight=0.0, rank=rank)
    assert [p.passes for p in model.phases()] == [0, 1]
    d0 = [p.detach().clone() for p in model.discriminator.parameters()]
    quiet_trainer(max_epochs=2, limit_val_batches=0).fit(model, datamodule=dm)
    assert all(torch.equal(a, b) for a, b in zip(d0, model.discriminator.parameters(), strict=True))
    assert float(model.w_drift()) == 0.0
    adv = small(dm, adv_weight=1.0, rank=rank)
    quiet_trainer(max_epochs=2, limit_val_batches=0).fit(adv, datamodule=dm)
    assert any(
        not torch.equal(a, b) for a, b in zip(d0, adv.discriminator.parameters(), strict=True)
    )
    assert float(adv.w_drift()) > 0
    assert float(adv.delta.diagonal().abs().max()) > 0  # U V^T has a diagonal; Delta not
    assert float(adv.delta(torch.eye(dm.n_items)).diagonal().abs().max()) < 1e-6


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
    """A resumed fit keeps the checkpoint's Delta (prepare_fit runs again on resume and
    solves B again)."""

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
    assert all(
        torch.equal(p, q) for p, q in zip(a.delta.parameters(), b.delta.parameters(), strict=True)
    )
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
    # the checkpoint holds Delta and the sparse training rows, never B (n x n): eval solves
    # B again from those rows and scores as the run did
    ckpt = torch.load(m["checkpoint"], map_location="cpu", weights_only=False)
    n_items = ckpt["hyper_parameters"]["n_items"]
    assert not any("base" in k for k in ckpt["state_dict"])
    assert max(t.numel() for t in ckpt["state_dict"].values()) < n_items**2
    start = ckpt["advrec_easegan_start"]
    assert start["shape"][1] == n_items and len(start["indices"]) > 0
    run_cli("eval", f"ckpt_path={m['checkpoint']}", f"hydra.run.dir={tmp_path / 'e'}", cwd=tmp_path)
    again = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert again["test/ndcg@20"] == pytest.approx(m["test/ndcg@20"], abs=1e-7)
    # a checkpoint of the dense-W EASE-GAN (before B + Delta) is refused, nothing written
    ckpt["state_dict"]["generator.weight"] = torch.zeros(n_items, n_items)
    torch.save(ckpt, tmp_path / "dense.ckpt")
    proc = run_cli(
        "eval", f"ckpt_path={tmp_path / 'dense.ckpt'}", f"hydra.run.dir={tmp_path / 'd'}",
        cwd=tmp_path, check=False,
    )  # fmt: skip
    one_line_refusal(proc, "dense W", "retrain")
    assert not (tmp_path / "d" / "metrics.json").exists()


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


@pytest.mark.parametrize(
    "bad", ["model.lam=0", "model.adv_weight=-1", "model.rank=0", "model.rank=2.5"]
)
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
