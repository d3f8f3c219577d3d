import numpy as np
import pytest
import torch

from advrec.data.datamodule import RecDataModule, UnrepeatedDistributedSampler, dense_rows
from advrec.data.sources import Synthetic
from tests.conftest import synthetic_dm


@pytest.fixture(scope="module")
def dm():
    return synthetic_dm(120, 60, 2400, val_fraction=0.1, batch_size=32, eval_batch_size=50)


def test_train_batches_are_dense_rows_of_train(dm):
    batch = next(iter(dm.train_dataloader()))
    rows = batch["rows"].numpy()
    assert batch["x"].shape == (32, dm.n_items)
    assert torch.equal(batch["x"], torch.from_numpy(dm.train_matrix[rows].toarray()))


def test_item_rows(dm):
    dm.rows = "items"
    try:
        batch = next(iter(dm.train_dataloader()))
        assert batch["x"].shape == (32, dm.n_users)
    finally:
        dm.rows = "users"


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
    assert m.history("val") is m.train_full_matrix


def test_phased_sampler_schedule_and_determinism():
    from advrec.data.datamodule import PhasedBatchSampler

    s = PhasedBatchSampler(10, [("D", 4, 2), ("G", 3, 1)], seed=1)
    batches = list(s)
    assert len(batches) == len(s) == 3 * 2 + 4
    assert [b[0][1:] for b in batches] == [(0, 0)] * 3 + [(0, 1)] * 3 + [(1, 0)] * 4
    for passes in (batches[0:3], batches[3:6], batches[6:10]):  # D, D, G: each covers all rows
        assert sorted(i for b in passes for i, *_ in b) == list(range(10))
    s.set_epoch(1)
    assert list(s) != batches
    s.set_epoch(0)
    assert list(s) == batches
