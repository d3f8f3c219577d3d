"""DiffRec: the released schedule, importance-sampling record and reverse step; planted
structure; a killed run resumed; DDP with the single-process metrics."""

import numpy as np
import pytest
import torch

from advrec.models.diffrec import HISTORY, DiffRec, betas_of
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


def test_linear_var_betas_give_the_linear_variance():
    """linear-var: 1 - abar_t runs linearly from scale x min to scale x max (the first beta
    then fixed to 1e-5, as released)."""
    v = np.linspace(0.1 * 1e-4, 0.1 * 0.02, 50)
    betas = betas_of("linear-var", 50, 0.1, 1e-4, 0.02)
    assert betas[0] == 1e-5
    assert np.allclose(betas[1:], 1 - (1 - v[1:]) / (1 - v[:-1]))
    assert np.allclose(betas_of("linear", 5, 1.0, 0.1, 0.5)[1:], [0.2, 0.3, 0.4, 0.5])


def test_the_record_keeps_each_steps_last_losses_in_order():
    """Against the released per-row loop (shift left when full, else write at the count)."""
    model = DiffRec(3, 4, hidden=[2], steps=3)
    history, count = np.zeros((3, HISTORY)), np.zeros(3, int)
    rng = np.random.default_rng(0)
    for _ in range(6):
        t = rng.integers(0, 3, 7)
        losses = rng.random(7)
        for step, loss in zip(t, losses, strict=True):
            if count[step] == HISTORY:
                history[step, :-1] = history[step, 1:].copy()
                history[step, -1] = loss
            else:
                history[step, count[step]] = loss
                count[step] += 1
        model.record(torch.from_numpy(t), torch.from_numpy(losses))
    assert np.array_equal(model.loss_count.numpy(), count)
    assert np.allclose(model.loss_history.numpy(), history)
    full = model.sample_steps(1000, "cpu")  # every step full: importance sampling
    assert (full[1] != 1).any()


def test_one_step_reverse_process_is_the_denoisers_x0():
    """With T = 1, abar_prev = 1 makes the posterior mean x_0's prediction itself."""
    model = DiffRec(3, 4, hidden=[5], steps=1, noise_scale=0.1).eval()
    h = torch.rand(3, 4)
    assert torch.allclose(model.score(torch.arange(3), h), model.denoiser(h, torch.zeros(3).long()))


def test_planted_blocks_beat_popularity():
    torch.manual_seed(0)
    kw = dict(hidden=[64], steps=5, noise_scale=0.005, noise_min=0.005, noise_max=0.01)
    kw.update(lr=1e-3, batch_size=64, ks=(5,))
    ndcg, toppop = planted_blocks_ndcg(lambda u, i: DiffRec(u, i, **kw), epochs=30)
    assert ndcg > toppop + 0.3, (ndcg, toppop)


def test_sigterm_mid_epoch_then_resume_ends_like_an_uninterrupted_run(tmp_path):
    """The importance-sampling record is in the checkpoint: the resumed run draws the steps
    an uninterrupted one draws."""
    dm = synthetic_dm(60, 40, 900, seed=3, val_fraction=0.1)

    def run(callbacks=(), ckpt=None):
        torch.manual_seed(0)
        model = DiffRec(dm.n_users, dm.n_items, hidden=[16], steps=2, batch_size=8)
        t = quiet_trainer(max_epochs=4, limit_val_batches=0, callbacks=list(callbacks))
        t.fit(model, datamodule=dm, ckpt_path=ckpt)
        return t.test(model, datamodule=dm, verbose=False)[0], model

    whole, a = run()
    assert bool((a.loss_count == HISTORY).all())  # importance sampling was reached
    with pytest.raises(SystemExit):
        run([KillAt(epoch=2, at=2), ResumePoint(dirpath=tmp_path, filename="last")])
    resumed, b = run(ckpt=str(tmp_path / "last.ckpt"))
    assert torch.equal(a.loss_history, b.loss_history)
    assert resumed == whole


@pytest.mark.parametrize(
    "bad", ["model.sampling_steps=200", "model.noise_schedule=sqrt", "model.mean_type=v"]
)
def test_bad_settings_are_refused_in_one_line(bad, tmp_path):
    proc = run_cli("train", "model=diffrec", "data=synthetic", bad, cwd=tmp_path, check=False)
    one_line_refusal(proc, bad.split("=")[0])


@pytest.mark.slow
def test_ddp_cpu_training_gives_the_metrics_one_process_computes(tmp_path):
    m = ddp_metrics_match_one_process(
        tmp_path, "model=diffrec", "data=synthetic", "model.hidden=[32]", "model.steps=5",
        "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=1",
    )  # fmt: skip
    assert m["model"] == "DiffRec" and m["epochs"] == 2
