"""iALS: its sweeps against a plain per-row reference of Rendle et al.'s released solver and
against the `implicit` package, planted structure, resume, and the entry points."""

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from lightning import Callback

from advrec.data.datamodule import RecDataModule
from advrec.models.ials import IALS, solve_rows
from advrec.models.pop import TopPop
from advrec.utils.callbacks import ResumePoint
from tests.helpers import data_args, one_line_refusal, quiet_trainer, run_cli, run_recommend
from tests.helpers.killers import KillAt
from tests.test_neighbours import Blocks


def project(m: np.ndarray, other: np.ndarray, a0: float, lam: float, nu: float, old):
    """Rendle et al.'s `Project`, one row at a time: rows without interactions keep `old`."""
    gram, d = other.T @ other, other.shape[1]
    out = old.copy()
    for r in range(m.shape[0]):
        s = np.flatnonzero(m[r])
        if len(s) == 0:
            continue
        e = other[s]
        a = a0 * gram + e.T @ e + lam * (len(s) + a0 * m.shape[1]) ** nu * np.eye(d)
        out[r] = np.linalg.solve(a, e.sum(0))
    return out


def reference(x: np.ndarray, w, h, a0, lam, nu, epochs):
    for _ in range(epochs):  # advrec solves the items first, then the users
        h = project(x.T, w, a0, lam, nu, h)
        w = project(x, h, a0, lam, nu, w)
    return w, h


def tiny_dm(batch_size: int = 3) -> RecDataModule:
    dm = RecDataModule(
        source=Blocks(),
        split={"method": "user_holdout", "test_fraction": 0.3},
        batch_size=batch_size,
    )
    dm.setup()
    return dm


@pytest.mark.parametrize("nu", [1.0, 0.0])
def test_two_sweeps_match_the_per_row_reference(nu):
    """Batches of 7 users (so sweeps span many batches), float64 reference."""
    dm = tiny_dm()
    model = IALS(
        dm.n_users, dm.n_items, dim=5, reg=0.05, reg_exp=nu, unobserved_weight=0.2, batch_size=7
    )
    w0, h0 = model.users.double().numpy().copy(), model.items.double().numpy().copy()
    quiet_trainer(max_epochs=2, limit_val_batches=0).fit(model, datamodule=dm)
    x = (dm.train_matrix.toarray() > 0).astype(np.float64)
    w, h = reference(x, w0, h0, 0.2, 0.05, nu, epochs=2)
    assert np.allclose(model.items.numpy(), h, atol=2e-4)
    assert np.allclose(model.users.numpy(), w, atol=2e-4)
    assert int(model.items_epoch) == 1


def test_solve_rows_groups_give_the_same_solution():
    """A tiny budget forces one row per group; the answer does not change."""
    rng = np.random.default_rng(1)
    m = sp.csr_matrix((rng.random((40, 25)) < 0.3).astype(np.float32))
    rows = np.flatnonzero(np.diff(m.indptr))
    other = torch.randn(25, 4)
    g = other.T @ other
    big = solve_rows(m, rows, other, g, 0.1, 0.01, 1.0)
    small = solve_rows(m, rows, other, g, 0.1, 0.01, 1.0, budget=1)
    assert torch.allclose(big, small, atol=1e-5)


def test_matches_the_implicit_package_at_constant_regularisation():
    """With reg_exp=0 the model is Hu et al.'s (confidence 1 + r / a0, L2 weight
    lam (1 + a0) / a0, embeddings in units of sqrt(1 + a0)): implicit's exact ALS, whose
    `alpha` is the whole confidence of an observed entry, gives the same sweep."""
    implicit_als = pytest.importorskip("implicit.cpu.als")
    rng = np.random.default_rng(0)
    x = sp.csr_matrix((rng.random((30, 20)) < 0.3).astype(np.float32))
    x = x[np.diff(x.indptr) > 0]
    x = x[:, np.flatnonzero(np.diff(x.tocsc().indptr))].tocsr()
    a0, lam = 0.25, 0.1
    w0 = rng.normal(0, 0.1, (x.shape[0], 6)).astype(np.float32)
    h0 = rng.normal(0, 0.1, (x.shape[1], 6)).astype(np.float32)
    w, h = reference(x.toarray(), w0.astype(np.float64), h0.astype(np.float64), a0, lam, 0.0, 1)
    scale = (1 / (1 + a0)) ** 0.5
    ref = implicit_als.AlternatingLeastSquares(
        factors=6,
        regularization=lam * (1 + a0) / a0,
        alpha=1 + 1 / a0,
        iterations=1,
        use_cg=False,
        random_state=0,
    )
    # implicit solves its "users" first: give it items x users to match advrec's order
    ref.user_factors, ref.item_factors = h0 / scale, w0 / scale
    ref.fit(x.T.tocsr(), show_progress=False)
    assert np.allclose(ref.user_factors * scale, h, atol=1e-4)
    assert np.allclose(ref.item_factors * scale, w, atol=1e-4)


def test_planted_blocks_beat_popularity():
    dm = tiny_dm(batch_size=64)
    results = {}
    for model in (
        TopPop(dm.n_users, dm.n_items, ks=(5,)),
        IALS(dm.n_users, dm.n_items, dim=8, reg=0.01, unobserved_weight=0.1, ks=(5,)),
    ):
        closed = isinstance(model, TopPop)
        trainer = quiet_trainer(
            max_epochs=1 if closed else 5, limit_train_batches=0 if closed else None
        )
        trainer.fit(model, datamodule=dm)
        results[type(model).__name__] = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert results["IALS"]["test/ndcg@5"] > results["TopPop"]["test/ndcg@5"] + 0.3, results


def test_loss_falls_every_sweep():
    """Each exact half-step can only lower the objective."""
    dm = tiny_dm(batch_size=16)
    model = IALS(dm.n_users, dm.n_items, dim=6, reg=0.01)
    losses = []

    class Record(Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            losses.append(float(pl_module.loss()["loss"]))

    trainer = quiet_trainer(max_epochs=4, limit_val_batches=0, callbacks=[Record()])
    trainer.fit(model, datamodule=dm)
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False)), losses
    assert float(trainer.callback_metrics["train/loss"]) == pytest.approx(losses[-1])


@pytest.mark.parametrize("bad", ["model.reg=0", "model.dim=0", "model.reg_exp=-1"])
def test_bad_settings_are_refused_in_one_line(bad, tiny, tmp_path):
    root, _ = tiny
    proc = run_cli("train", *data_args(root), "model=ials", bad, cwd=tmp_path, check=False)
    one_line_refusal(proc, bad.split("=")[0])


def test_epoch_chosen_on_validation_then_eval_and_recommend(tiny, tmp_path):
    """The validated protocol picks the epoch, refits that many sweeps on train + validation;
    advrec-eval reads the checkpoint back to the same numbers; advrec-recommend serves it."""
    root, _ = tiny
    run_cli(
        "train",
        *data_args(root),
        "model=ials",
        "model.dim=8",
        "trainer.max_epochs=6",
        "protocol.patience=10",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    curve = pd.read_csv(tmp_path / "run" / "csv" / "metrics.csv").dropna(subset=["val/ndcg@10"])
    best = curve.groupby("epoch")["val/ndcg@10"].first().iloc[:6]  # the 6 epochs' checks
    assert m["selected_checkpoint"] and m["selected_epoch"] == int(best.idxmax()) + 1
    assert m["val/ndcg@10"] == pytest.approx(best.max(), abs=1e-6)
    assert m["refit"] == "train+validation"
    run_cli("eval", f"ckpt_path={m['checkpoint']}", f"hydra.run.dir={tmp_path / 'e'}", cwd=tmp_path)
    again = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert again["test/ndcg@10"] == pytest.approx(m["test/ndcg@10"], abs=1e-7)
    run_recommend(m["checkpoint"], tmp_path / "recs.csv", tmp_path, k=3)


def test_sigterm_mid_sweep_then_resume_ends_like_an_uninterrupted_run(tmp_path):
    """The item step of the interrupted epoch is in the checkpoint: the resumed run goes on
    with the remaining users instead of solving the items again."""
    dm = tiny_dm()

    def run(callbacks=(), ckpt=None):
        torch.manual_seed(0)
        model = IALS(dm.n_users, dm.n_items, dim=6, reg=0.02, batch_size=32)
        t = quiet_trainer(max_epochs=3, limit_val_batches=0, callbacks=list(callbacks))
        t.fit(model, datamodule=dm, ckpt_path=ckpt)
        return model

    whole = run()
    with pytest.raises(SystemExit):  # Lightning stops after the batch that saw SIGTERM
        run([KillAt(epoch=1, at=2), ResumePoint(dirpath=tmp_path, filename="last")])
    resumed = run(ckpt=str(tmp_path / "last.ckpt"))
    assert torch.equal(resumed.users, whole.users) and torch.equal(resumed.items, whole.items)


def test_a_singular_system_is_one_clear_error():
    """No L2 weight and no unobserved weight: a one-item row's system has rank 1."""
    from advrec.errors import AdvrecError

    m = sp.csr_matrix(np.array([[1, 0, 0], [0, 1, 0]], np.float32))
    other = torch.randn(3, 4)
    with pytest.raises(AdvrecError, match="raise model.reg"):
        solve_rows(m, np.arange(2), other, other.T @ other, 0.0, 0.0, 1.0)
