import numpy as np
import pytest
import torch

from advrec.data.batches import Phase, Plan, UnrepeatedDistributedSampler, dense_rows
from advrec.data.datamodule import RecDataModule
from advrec.data.sources import Synthetic
from advrec.models.base import Recommender
from tests.helpers import quiet_trainer, synthetic_dm


@pytest.fixture(scope="module")
def dm():
    return synthetic_dm(120, 60, 2400, val_fraction=0.1, batch_size=32, eval_batch_size=50)


def test_train_batches_are_dense_rows_of_train(dm):
    batch = next(iter(dm.train_dataloader()))
    ids = batch["ids"].numpy()
    assert batch["x"].shape == (32, dm.n_items)
    assert torch.equal(batch["x"], torch.from_numpy(dm.train_matrix[ids].toarray()))
    assert "features" not in batch and "phase" in batch  # a plan without features


def test_item_rows_follow_the_plan(dm):
    batch = next(iter(dm.train_dataloader(Plan(rows="items"))))
    assert batch["x"].shape == (32, dm.n_users)
    ids = batch["ids"].numpy()
    assert torch.equal(batch["x"], torch.from_numpy(dm.train_matrix.T.tocsr()[ids].toarray()))


def test_the_plan_of_the_fitted_model_shapes_its_batches(dm):
    """The DataModule reads the plan of the model being fitted; the model never writes the
    DataModule."""

    class TwoPhases(Recommender):
        rows = "items"

        def __init__(self):
            super().__init__(dm.n_users, dm.n_items)
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.seen = []

        def phases(self):
            return (Phase("A", 10, 2), Phase("B", 25, 1))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

        def training_step(self, batch, batch_idx):
            self.seen.append((batch["phase"], batch["pass"], len(batch["ids"])))
            return self.w.sum() * 0.0

    model = TwoPhases()
    quiet_trainer(max_epochs=1, limit_val_batches=0).fit(model, datamodule=dm)
    n = dm.n_items  # item rows
    expected = [
        ("A", p, len(b)) for p in range(2) for b in np.array_split(np.arange(n), range(10, n, 10))
    ]
    expected += [("B", 0, len(b)) for b in np.array_split(np.arange(n), range(25, n, 25))]
    assert model.seen == expected


def test_eval_history_is_train_for_val_and_train_plus_val_for_test(dm):
    v = next(iter(dm.val_dataloader()))
    t = next(iter(dm.test_dataloader()))
    u = v["users"].numpy()
    assert torch.equal(v["history"], dense_rows(dm.train_matrix, u))
    assert torch.equal(v["target"], dense_rows(dm.val_matrix, u) > 0)
    u = t["users"].numpy()
    assert torch.equal(t["history"], dense_rows(dm.train_full_matrix, u))
    assert not (t["history"].bool() & t["target"]).any()


def test_every_user_evaluated_once(dm):
    seen = torch.cat([b["users"] for b in dm.test_dataloader()])
    assert sorted(seen.tolist()) == list(range(dm.n_users))


@pytest.mark.parametrize("n,world", [(10, 3), (7, 2), (2, 4), (1000, 7)])
def test_unrepeated_sampler_partitions_exactly(n, world):
    shards = [list(UnrepeatedDistributedSampler(n, world, r)) for r in range(world)]
    flat = sorted(i for s in shards for i in s)
    assert flat == list(range(n))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_dense_rows_never_densifies_the_matrix(dm):
    out = dense_rows(dm.train_matrix, np.array([3, 1]))
    assert out.shape == (2, dm.n_items)
    assert out.sum() == dm.train_matrix[[3, 1]].sum()


def test_val_on_test_evaluates_the_test_split_with_full_history():
    m = RecDataModule(
        source=Synthetic(n_users=50, n_items=30, n_interactions=600, seed=0),
        split={"method": "random_holdout"},
        val_on_test=True,
    )
    m.setup()
    assert m.val_matrix is m.test_matrix
    assert m.history("val") is m.history("test")
    assert (m.history("val") != m.train_full_matrix).nnz == 0  # no revealed items here


def test_phased_sampler_schedule_and_determinism():
    from advrec.data.batches import PhasedBatchSampler

    s = PhasedBatchSampler(10, (Phase("D", 4, 2), Phase("G", 3, 1)), seed=1)
    batches = list(s)
    assert len(batches) == len(s) == 3 * 2 + 4
    assert [(b.phase, b.pass_) for b in batches] == [("D", 0)] * 3 + [("D", 1)] * 3 + [("G", 0)] * 4
    for passes in (batches[0:3], batches[3:6], batches[6:10]):  # D, D, G: each covers all rows
        assert sorted(i for b in passes for i in b) == list(range(10))
    s.set_epoch(1)
    assert list(s) != batches
    s.set_epoch(0)
    assert list(s) == batches


def _batch_orders(dm, epochs: int, **trainer_kw) -> list[list[list[int]]]:
    """The row batches a real `Trainer.fit` feeds the model, per epoch."""
    from advrec.models.base import Recommender

    class Recorder(Recommender):
        def __init__(self):
            super().__init__(dm.n_users, dm.n_items)
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.seen: dict[int, list] = {}

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

        def training_step(self, batch, batch_idx):
            self.seen.setdefault(self.current_epoch, []).append(batch["ids"].tolist())
            return self.w.sum() * 0.0

    model = Recorder()
    quiet_trainer(max_epochs=epochs, limit_val_batches=0, **trainer_kw).fit(model, datamodule=dm)
    return [model.seen[e] for e in range(epochs)]


def test_every_epoch_of_a_real_fit_gets_new_batches():
    """Lightning never calls set_epoch on a batch sampler: the sampler must see the epoch."""
    m = synthetic_dm(60, 30, 900, batch_size=16)
    orders = _batch_orders(m, 3)
    for e in range(3):  # each epoch is one pass over every row
        assert sorted(r for b in orders[e] for r in b) == list(range(m.n_users))
    assert orders[0] != orders[1] and orders[1] != orders[2] and orders[0] != orders[2]
    assert orders[0][0] != orders[1][0] != orders[2][0]
    # and a second fit with the same seed sees exactly the same epochs (reproducible)
    assert _batch_orders(synthetic_dm(60, 30, 900, batch_size=16), 3) == orders


def test_outside_a_fit_set_epoch_decides():
    """A loop that drives the loader by hand (bench/train_overhead.py) sets the epoch itself."""
    m = synthetic_dm(60, 30, 900, batch_size=16)
    loader = m.train_dataloader()
    first = [b["ids"].tolist() for b in loader]
    loader.batch_sampler.set_epoch(1)
    second = [b["ids"].tolist() for b in loader]
    loader.batch_sampler.set_epoch(0)
    assert second != first and [b["ids"].tolist() for b in loader] == first
