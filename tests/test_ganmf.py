"""GANMF: its two losses on a tiny example computed by hand, the item-based scores, planted
structure, a killed run resumed, and DDP with the single-process metrics."""

import pytest
import torch

from advrec.models.ganmf import GANMF
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


def tiny(**kw) -> GANMF:
    """2 users x 3 items, one factor, a one-unit code; weights set by hand."""
    model = GANMF(2, 3, factors=1, emb_dim=1, **kw)
    with torch.no_grad():
        model.generator.row.copy_(torch.tensor([[1.0], [2.0]]))  # p_0, p_1
        model.generator.col.copy_(torch.tensor([[1.0], [0.0], [-1.0]]))  # q_0..q_2
        model.discriminator.encode.weight.copy_(torch.tensor([[1.0, 1.0, 0.0]]))
        model.discriminator.encode.bias.zero_()
        model.discriminator.decode.weight.copy_(torch.tensor([[1.0], [0.0], [0.5]]))
        model.discriminator.decode.bias.zero_()
    return model


BATCH = {"x": torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]), "ids": torch.tensor([0, 1])}


def test_losses_match_a_hand_computed_example():
    """G(0) = [1, 0, -1], G(1) = [2, 0, -2]. Codes: real 1 and 1, fake 1 and 2; decoded
    [1, 0, .5] x code. Real errors [0, 0, -.5], [1, -1, -.5]: rec(x) = 2.5 / 6; fake errors
    [0, 0, 1.5], [0, 0, 3]: rec(G) = 11.25 / 6 = 1.875."""
    real, fake = 2.5 / 6, 1.875
    model = tiny(m=5.0, reg_d=0.1, recon_coefficient=0.25)
    d, stats = model.d_loss(BATCH)
    assert float(stats["rec_real"].detach()) == pytest.approx(real)
    assert float(stats["rec_fake"].detach()) == pytest.approx(fake)
    # the hinge is active (5 x .4167 > 1.875); l2(D) = (1 + 1 + 1 + .25) / 2 = 1.625
    assert float(d.detach()) == pytest.approx(real + (5 * real - fake) + 0.1 * 1.625)
    d3, _ = tiny(m=3.0).d_loss(BATCH)  # 3 x .4167 < 1.875: the hinge is off
    assert float(d3.detach()) == pytest.approx(real)
    # G: .75 x 1.875 + .25 x mean((1 - 1)^2, (1 - 2)^2) = 1.40625 + .125
    g, stats = model.g_loss(BATCH)
    assert float(stats["feature_matching"].detach()) == pytest.approx(0.5)
    assert float(g.detach()) == pytest.approx(0.75 * fake + 0.25 * 0.5)
    g_reg, _ = tiny(recon_coefficient=0.25, reg_g=0.2).g_loss(BATCH)
    # l2(G) = (1 + 4 + 1 + 0 + 1) / 2 = 3.5
    assert float(g_reg.detach()) == pytest.approx(0.75 * fake + 0.25 * 0.5 + 0.2 * 3.5)


def test_scores_user_and_item_based():
    user = tiny()
    assert torch.equal(
        user.score(torch.tensor([1]), torch.zeros(1, 3)), torch.tensor([[2.0, 0, -2]])
    )
    item = GANMF(2, 3, rows="items", factors=2, emb_dim=1)
    assert item.generator.row.shape == (3, 2) and item.generator.col.shape == (2, 2)
    expected = (item.generator.row @ item.generator.col.T).T  # the items' rows, transposed
    assert torch.allclose(item.score(torch.tensor([0, 1]), torch.zeros(2, 3)), expected)


def test_planted_blocks_beat_popularity():
    torch.manual_seed(0)
    kw = dict(factors=8, emb_dim=16, m=5.0, recon_coefficient=0.5, lr_g=1e-2, lr_d=1e-2, ks=(5,))
    ndcg, toppop = planted_blocks_ndcg(lambda u, i: GANMF(u, i, **kw), epochs=30)
    assert ndcg > toppop + 0.3, (ndcg, toppop)


@pytest.fixture(scope="module")
def dm():
    return synthetic_dm(60, 40, 900, seed=3, val_fraction=0.1)


@pytest.mark.parametrize("rows", ["users", "items"])
def test_sigterm_mid_epoch_then_resume_ends_like_an_uninterrupted_run(dm, tmp_path, rows):
    def run(callbacks=(), ckpt=None):
        torch.manual_seed(0)
        model = GANMF(dm.n_users, dm.n_items, rows=rows, factors=4, emb_dim=8, batch_size=8)
        t = quiet_trainer(max_epochs=3, limit_val_batches=0, callbacks=list(callbacks))
        t.fit(model, datamodule=dm, ckpt_path=ckpt)
        return t.test(model, datamodule=dm, verbose=False)[0]

    whole = run()
    with pytest.raises(SystemExit):
        run([KillAt(epoch=1, at=3), ResumePoint(dirpath=tmp_path, filename="last")])
    assert run(ckpt=str(tmp_path / "last.ckpt")) == whole


@pytest.mark.parametrize("bad", ["model.factors=0", "model.recon_coefficient=2", "model.rows=both"])
def test_bad_settings_are_refused_in_one_line(bad, tmp_path):
    proc = run_cli("train", "model=ganmf", "data=synthetic", bad, cwd=tmp_path, check=False)
    one_line_refusal(proc, bad.split("=")[0])


@pytest.mark.slow
@pytest.mark.parametrize("rows", ["users", "items"])
def test_ddp_cpu_training_gives_the_metrics_one_process_computes(tmp_path, rows):
    m = ddp_metrics_match_one_process(
        tmp_path, "model=ganmf", "data=synthetic", f"model.rows={rows}", "trainer.max_epochs=2",
        "trainer.check_val_every_n_epoch=1",
    )  # fmt: skip
    assert m["model"] == "GANMF" and m["epochs"] == 2
