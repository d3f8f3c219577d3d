import json

import numpy as np
import pytest
import torch

from advrec.errors import AdvrecError
from advrec.models.bpr import BPR
from advrec.models.irgan import IRGAN, mixed_policy, reinforce_loss, reward_of
from advrec.models.nets import MF
from advrec.models.samplers import sample_unobserved
from tests.helpers import quiet_trainer, run_cli, synthetic_dm


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
    logged = fit(model, dm).callback_metrics  # D's mean outputs, for the report's panel
    assert float(logged["train/D_real"]) > 0.5 > float(logged["train/D_fake"])
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
    irgan.setup("fit")
    assert torch.equal(irgan.generator.item, bpr.mf.item)
    assert not torch.equal(irgan.discriminator.item, bpr.mf.item)
    with pytest.raises(AdvrecError, match="do not match"):
        IRGAN(dm.n_users, dm.n_items, dim=7, init_ckpt=str(tmp_path / "bpr.ckpt")).setup("fit")
    with pytest.raises(AdvrecError, match="not found"):
        IRGAN(dm.n_users, dm.n_items, init_ckpt=str(tmp_path / "nope.ckpt")).setup("fit")


def test_irgan_checkpoint_loads_after_its_bpr_checkpoint_is_gone(dm, tmp_path):
    bpr = BPR(dm.n_users, dm.n_items, dim=5)
    fit(bpr, dm).save_checkpoint(tmp_path / "bpr.ckpt")
    irgan = IRGAN(
        dm.n_users, dm.n_items, dim=5, d_epochs=1, g_epochs=1, init_ckpt=str(tmp_path / "bpr.ckpt")
    )
    t = fit(irgan, dm)
    assert not torch.equal(irgan.generator.item, bpr.mf.item)  # trained from BPR's start
    t.save_checkpoint(tmp_path / "irgan.ckpt")
    (tmp_path / "bpr.ckpt").unlink()
    back = IRGAN.load_from_checkpoint(tmp_path / "irgan.ckpt", weights_only=True)
    assert torch.equal(back.generator.item, irgan.generator.item)


def test_one_d_step_is_the_released_sgd_update(tmp_path):
    """dis_model.py: SGD(lr) on the *sum* of the per-example loss vector
    bce_i + lamda * (l2_loss(u_emb) + l2_loss(i_emb) + l2_loss(i_bias)) over a batch of 16
    (user, positive, sampled) lines = 32 examples. Two users with 8 positives each make one
    released batch and one advrec step."""
    import scipy.sparse as sp

    from advrec.data.datamodule import RecDataModule
    from advrec.data.interactions import Interactions

    n_items, lr, lamda = 20, 1e-3, 0.1 / 16
    rng = np.random.default_rng(0)
    rows, cols, test_cols = [], [], []
    for u in range(2):
        chosen = rng.choice(n_items, 9, replace=False)
        rows += [u] * 8
        cols += sorted(chosen[:8].tolist())
        test_cols.append(int(chosen[8]))
    m = sp.csr_matrix(
        (np.ones(18, np.float32), (rows + [0, 1], cols + test_cols)), shape=(2, n_items)
    )
    m.sort_indices()
    folds = np.zeros(18, np.int8)
    folds[m.indices == np.repeat(test_cols, 9)] = 2  # each user's one test item
    data = Interactions(m, np.array(["a", "b"]), np.arange(n_items).astype(str), folds=folds)
    dm = RecDataModule(source=_Fixed(data), split={"method": "predefined"})
    dm.setup()
    assert dm.train_matrix.nnz == 16
    torch.manual_seed(1)
    model = IRGAN(2, n_items, dim=3, lr_d=lr, reg_d=lamda, d_epochs=1, g_epochs=0, batch_size=2)
    with torch.no_grad():  # a non-trivial D (the released one starts at U(-0.05, 0.05), bias 0)
        model.discriminator.bias.uniform_(-0.5, 0.5)
    before = {k: v.detach().double().clone() for k, v in model.discriminator.named_parameters()}
    fit(model, dm)
    neg = model._d_neg  # G's samples the step used, aligned with the CSR positives

    # the released update, written out: 32 examples, SGD on the summed loss vector
    users = torch.tensor(rows * 2)
    items = torch.tensor(cols + neg.tolist())
    labels = torch.tensor([1.0] * 16 + [0.0] * 16, dtype=torch.float64)
    p = {k: v.clone().requires_grad_(True) for k, v in before.items()}
    ue, ie, ib = p["user"][users], p["item"][items], p["bias"][items]
    logits = (ue * ie).sum(1) + ib
    l2_batch = (ue.pow(2).sum() + ie.pow(2).sum() + ib.pow(2).sum()) / 2
    vector = (
        torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        + lamda * l2_batch
    )
    vector.sum().backward()
    for k, v in model.discriminator.named_parameters():
        expected = before[k] - lr * p[k].grad
        assert torch.allclose(v.detach().double(), expected, atol=1e-6, rtol=0), k
    assert not torch.allclose(before["item"], model.discriminator.item.detach().double())


class _Fixed:
    """A source that returns given interactions."""

    def __init__(self, data):
        self.data = data

    def load(self):
        return self.data


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


def test_a_diverged_policy_ends_the_run_as_diverged_not_as_a_crash():
    """A non-finite policy (G's weights blown up by a large lr_g at a low temperature) is a
    Diverged run (a search prunes it and goes on), not torch.multinomial's RuntimeError."""
    from advrec.errors import Diverged
    from advrec.models.irgan import draw

    with pytest.raises(Diverged, match="lower model.lr_g"):
        draw(torch.tensor([[0.5, float("nan")]], dtype=torch.float64), 2)
    assert draw(torch.tensor([[0.0, 1.0]], dtype=torch.float64), 3).tolist() == [[1, 1, 1]]
