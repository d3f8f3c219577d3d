import json

import numpy as np
import pytest
import torch

from advrec.errors import AdvrecError
from advrec.models.bpr import BPR
from advrec.models.irgan import IRGAN, mixed_policy, reinforce_loss, reward_of
from advrec.models.nets import MF, sample_unobserved
from tests.conftest import quiet_trainer, run_cli, synthetic_dm


def test_mixed_policy_sums_to_one_and_mixes_towards_positives():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 10, generator=g)
    x = torch.zeros(3, 10)
    x[0, [1, 4]] = 1
    x[1, 7] = 1  # row 2 has no positives
    p, pn = mixed_policy(logits, x, 0.2)
    assert p.dtype == torch.float64
    assert torch.allclose(pn.sum(1), torch.ones(3, dtype=torch.float64))
    expected = 0.8 * p[0] + 0.2 * x[0].double() / 2
    assert torch.allclose(pn[0], expected)
    assert torch.allclose(pn[2], p[2])


def test_probabilities_never_fail_to_sample_at_extreme_logits():
    logits = torch.tensor([[500.0, -500.0, 0.0]]) / 0.2
    p, pn = mixed_policy(logits, torch.tensor([[0.0, 1.0, 0.0]]), 0.2)
    assert torch.isfinite(pn).all()
    torch.multinomial(pn, 50, replacement=True)


def test_rewards():
    f = torch.tensor([0.0, 2.0])
    assert torch.allclose(reward_of(f, "sigmoid_centered"), 2 * (torch.sigmoid(f) - 0.5))
    assert torch.allclose(reward_of(f, "softplus"), torch.log1p(torch.exp(f)))


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_reward_sign_moves_the_items_probability(sign):
    g = MF(1, 6, 3)
    opt = torch.optim.SGD(g.parameters(), lr=0.1)
    users, item = torch.tensor([0]), 2
    before = torch.softmax(g(users), 1)[0, item].item()
    loss = reinforce_loss(
        g(users), torch.tensor([[item]]), torch.tensor([[sign]]), torch.tensor([1.0])
    )
    opt.zero_grad()
    loss.backward()
    opt.step()
    after = torch.softmax(g(users), 1)[0, item].item()
    assert (after - before) * sign > 0


def test_sample_unobserved_never_returns_a_positive():
    x = (torch.rand(8, 30) < 0.5).float()
    rows, _ = x.nonzero(as_tuple=True)
    cand = sample_unobserved(x, rows, 4)
    assert cand.shape == (len(rows), 4)
    assert not x[rows[:, None], cand].bool().any()


def test_dns_keeps_the_highest_scored_candidate():
    model = BPR(4, 50, dim=3, dns_k=6)
    x = torch.zeros(4, 50)
    x[:, :3] = 1
    users = torch.arange(4)
    rows, _ = x.nonzero(as_tuple=True)
    torch.manual_seed(0)
    neg = model.negatives(users, x, rows)
    torch.manual_seed(0)
    cand = sample_unobserved(x, rows, 6)
    scores = model.mf.pair(users[rows], cand)
    assert torch.equal(neg, cand.gather(1, scores.argmax(1, keepdim=True))[:, 0])


@pytest.fixture(scope="module")
def dm():
    return synthetic_dm(80, 60, 1500, seed=4)


def fit(model, dm, epochs=1):
    dm.schedule = model.schedule
    t = quiet_trainer(max_epochs=epochs, limit_val_batches=0)
    t.fit(model, datamodule=dm)
    return t


def test_d_learns_to_separate_positives_from_g_samples(dm):
    torch.manual_seed(0)
    model = IRGAN(
        dm.n_users,
        dm.n_items,
        dim=8,
        optimizer="adam",
        lr_d=0.05,
        d_epochs=30,
        reg_d=0,
        g_epochs=0,
        batch_size=16,
    )
    fit(model, dm)
    m = dm.train_matrix
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    users = torch.from_numpy(rows)
    with torch.no_grad():
        pos = model.discriminator.pair(users, torch.from_numpy(m.indices.astype(np.int64)))
        fake = model.discriminator.pair(users, model.sample_for_d())
    auc = (pos[:, None] > fake[None, :]).float().mean()
    assert auc > 0.8


def test_bpr_checkpoint_initialises_irgan(dm, tmp_path):
    bpr = BPR(dm.n_users, dm.n_items, dim=5)
    t = fit(bpr, dm)
    t.save_checkpoint(tmp_path / "bpr.ckpt")
    irgan = IRGAN(dm.n_users, dm.n_items, dim=5, init_ckpt=str(tmp_path / "bpr.ckpt"))
    assert torch.equal(irgan.generator.item, bpr.mf.item)
    assert not torch.equal(irgan.discriminator.item, bpr.mf.item)
    with pytest.raises(AdvrecError, match="do not match"):
        IRGAN(dm.n_users, dm.n_items, dim=7, init_ckpt=str(tmp_path / "bpr.ckpt"))
    with pytest.raises(AdvrecError, match="not found"):
        IRGAN(dm.n_users, dm.n_items, init_ckpt=str(tmp_path / "nope.ckpt"))


@pytest.mark.parametrize(
    "model,extra",
    [("irgan", ["model.d_epochs=2", "model.g_epochs=2"]), ("bpr", []), ("multvae", [])],
)
def test_fast_dev_run_through_hydra(model, extra, tmp_path):
    run_cli(
        "train",
        f"model={model}",
        "data=synthetic",
        *extra,
        "trainer.fast_dev_run=true",
        "logger=csv",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert np.isfinite(m["test/ndcg@10"])
