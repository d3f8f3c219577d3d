"""The samplers GAN steps draw from: hash-defined negatives, in-row negatives."""

import pytest
import torch

from advrec.models.samplers import HashedNegatives, negative_sample, sample_unobserved
from tests.helpers import synthetic_dm

ZR, PM = 0, 1


def test_negative_sample_size_and_support():
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(50, 97, generator=g) < 0.2).float()
    ids = torch.arange(50)
    for pct in (10, 70, 100):
        m = negative_sample(ids, x, pct, seed=1, epoch=0, salt=ZR)
        unobserved = (x == 0).sum(1)
        assert torch.equal(m.sum(1), pct * unobserved // 100)
        assert not (m & (x > 0)).any()


def test_negative_sample_is_per_row_per_epoch_and_independent_by_salt():
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(40, 400, generator=g) < 0.1).float()
    ids = torch.arange(40)
    a = negative_sample(ids, x, 70, 1, epoch=0, salt=ZR)
    # the same row gets the same sample whatever batch it sits in
    assert torch.equal(negative_sample(ids[5:9], x[5:9], 70, 1, 0, ZR), a[5:9])
    # a new epoch draws a new sample
    assert not torch.equal(negative_sample(ids, x, 70, 1, epoch=1, salt=ZR), a)
    # N^PM is drawn independently of N^ZR: overlap ~ 0.7 * 0.7 of the unobserved entries
    b = negative_sample(ids, x, 70, 1, epoch=0, salt=PM)
    assert not torch.equal(a, b)
    overlap = (a & b).sum() / (x == 0).sum()
    assert float(overlap) == pytest.approx(0.49, abs=0.02)


def test_bulk_epoch_samples_equal_the_per_batch_samples():
    dm = synthetic_dm(60, 40, 900, seed=3)
    m = dm.fit_rows_matrix("items")
    bulk, per_batch = HashedNegatives(seed=5), HashedNegatives(seed=5, max_entries=0)
    bulk.use(m)
    per_batch.use(m)
    ids = torch.tensor([4, 0, 17])
    x = torch.from_numpy(m[ids.numpy()].toarray())
    for epoch in (3, 4):
        for salt, pct in ((PM, 70), (ZR, 40)):
            expected = negative_sample(ids, x, pct, 5, epoch, salt)
            assert torch.equal(bulk(ids, x, pct, salt, epoch), expected)
            assert torch.equal(per_batch(ids, x, pct, salt, epoch), expected)
        # one epoch's samples are held at a time, and only where they fit
        assert {k[0] for k in bulk._cache} == {epoch} and not per_batch._cache


def test_sample_unobserved_never_returns_a_positive():
    x = (torch.rand(8, 30) < 0.5).float()
    at, _ = x.nonzero(as_tuple=True)
    cand = sample_unobserved(x, at, 4)
    assert cand.shape == (len(at), 4)
    assert not x[at[:, None], cand].bool().any()
