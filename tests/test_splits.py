import os

import numpy as np
import pandas as pd
import pytest

from advrec.data.interactions import Interactions
from advrec.data.sources import Synthetic
from advrec.data.splits import VAL, make_split
from advrec.errors import AdvrecError


@pytest.fixture(scope="module")
def data():
    d = Synthetic(n_users=300, n_items=200, n_interactions=6000, seed=2).load()
    d.timestamps = np.random.default_rng(0).integers(0, 10_000, d.nnz)
    return d


def overlap(a, b):
    return a.multiply(b).nnz


@pytest.mark.parametrize("method", ["random_holdout", "user_holdout", "temporal"])
def test_parts_are_disjoint_and_cover_everything(data, method):
    s = make_split(data, method, test_fraction=0.2, val_fraction=0.1, seed=0)
    assert overlap(s.train, s.test) == overlap(s.train, s.val) == overlap(s.val, s.test) == 0
    assert s.train.nnz + s.val.nnz + s.test.nnz == data.nnz
    assert s.train_full.nnz == s.train.nnz + s.val.nnz
    assert s.test.nnz == pytest.approx(0.2 * data.nnz, rel=0.05)


def test_seeded_and_seed_sensitive(data):
    a = make_split(data, "random_holdout", seed=1).folds
    assert np.array_equal(a, make_split(data, "random_holdout", seed=1).folds)
    assert not np.array_equal(a, make_split(data, "random_holdout", seed=2).folds)


def test_user_holdout_keeps_a_training_item_per_user(data):
    s = make_split(data, "user_holdout", test_fraction=0.5, seed=0)
    per_user = np.diff(data.matrix.indptr)
    assert (np.diff(s.train.indptr)[per_user > 0] >= 1).all()


def test_leave_one_out_takes_the_latest(data):
    s = make_split(data, "leave_one_out", seed=0)
    test_counts = np.diff(s.test.indptr)
    assert set(test_counts[np.diff(data.matrix.indptr) >= 2]) == {1}
    rows, _ = data.coo()
    held = s.folds == 2
    for u in range(5):
        mine = rows == u
        assert data.timestamps[mine & held].min() == data.timestamps[mine].max()


def test_temporal_holds_out_the_newest(data):
    s = make_split(data, "temporal", test_fraction=0.2, seed=0)
    assert data.timestamps[s.folds == 2].min() >= data.timestamps[s.folds == 0].max()


def test_temporal_without_timestamps_is_a_clear_error():
    d = Synthetic(n_users=50, n_items=40, n_interactions=500).load()
    with pytest.raises(AdvrecError, match="needs timestamps"):
        make_split(d, "temporal")


def test_predefined_keeps_file_folds_and_carves_validation_from_train():
    df = pd.DataFrame(
        {"user": [1, 1, 1, 2, 2, 2], "item": [1, 2, 3, 1, 2, 3], "fold": [0, 0, 2, 0, 0, 2]}
    )
    d = Interactions.from_frame(df, fold_col="fold")
    s = make_split(d, "predefined", val_fraction=0.5, seed=0)
    assert np.array_equal(s.folds == 2, d.folds == 2)
    assert (s.folds == VAL).sum() == 2


def test_unknown_method(data):
    with pytest.raises(AdvrecError, match="unknown split method 'rnd'"):
        make_split(data, "rnd")


def test_cache_roundtrip_and_key(data, tmp_path):
    a = make_split(data, "random_holdout", seed=3, cache_dir=tmp_path)
    files = list((tmp_path / "splits").glob("*.npz"))
    assert len(files) == 1
    b = make_split(data, "random_holdout", seed=3, cache_dir=tmp_path)
    assert np.array_equal(a.folds, b.folds)
    make_split(data, "random_holdout", seed=4, cache_dir=tmp_path)
    make_split(data, "random_holdout", seed=3, test_fraction=0.3, cache_dir=tmp_path)
    assert len(list((tmp_path / "splits").glob("*.npz"))) == 3
    assert not list((tmp_path / "splits").glob("*.tmp"))


def test_cache_is_really_read(data, tmp_path):
    make_split(data, "random_holdout", seed=3, cache_dir=tmp_path)
    (path,) = (tmp_path / "splits").glob("*.npz")
    fake = np.full(data.nnz, 2, np.int8)
    np.savez(path, folds=fake)
    assert (make_split(data, "random_holdout", seed=3, cache_dir=tmp_path).folds == 2).all()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_cache_only_costs_time(data, tmp_path):
    tmp_path.chmod(0o500)
    try:
        assert make_split(data, "random_holdout", cache_dir=tmp_path).test.nnz > 0
    finally:
        tmp_path.chmod(0o700)
