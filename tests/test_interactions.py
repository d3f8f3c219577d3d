import numpy as np
import pandas as pd
import pytest

from advrec.data.interactions import Interactions
from advrec.errors import AdvrecError


def frame(**cols):
    return pd.DataFrame(cols)


def test_string_ids_survive_and_matrix_is_binary():
    df = frame(user=["bob", "amy", "bob"], item=["x9", "a1", "a1"], rating=[5, 3, 1])
    data = Interactions.from_frame(df, rating_col="rating")
    assert list(data.user_ids) == ["amy", "bob"] and list(data.item_ids) == ["a1", "x9"]
    assert data.matrix.toarray().tolist() == [[1, 0], [1, 1]]
    assert data.matrix.dtype == np.float32


def test_missing_column_names_it_and_lists_found_columns():
    df = frame(uid=[1], item=[2])
    with pytest.raises(AdvrecError) as e:
        Interactions.from_frame(df, user_col="user", source="log.csv")
    msg = str(e.value)
    assert "['user']" in msg and "['uid', 'item']" in msg and "log.csv" in msg


@pytest.mark.parametrize("bad", ["five", np.nan])
def test_non_numeric_or_nan_ratings_are_refused(bad):
    df = frame(user=[1, 2], item=[1, 1], rating=[4.0, bad])
    with pytest.raises(AdvrecError, match="'rating' has 1 non-numeric or NaN"):
        Interactions.from_frame(df, rating_col="rating")


@pytest.mark.parametrize(
    "policy,expected_time", [("first", 10), ("last", 20), ("max", 30), ("sum", 30)]
)
def test_duplicates_follow_policy_and_are_counted(policy, expected_time):
    df = frame(user=[1, 1, 1, 2], item=[7, 7, 7, 7], rating=[1, 5, 3, 4], time=[10, 30, 20, 5])
    data = Interactions.from_frame(df, rating_col="rating", time_col="time", duplicates=policy)
    assert data.stats["n_duplicates"] == 2
    assert data.nnz == 2
    assert data.timestamps[0] == expected_time


def test_duplicates_error_policy():
    df = frame(user=[1, 1], item=[7, 7])
    with pytest.raises(AdvrecError, match="1 duplicate"):
        Interactions.from_frame(df, duplicates="error")


def test_threshold_and_empty_after_filtering():
    df = frame(user=[1, 2], item=[1, 2], rating=[1, 2])
    with pytest.raises(AdvrecError, match="no interactions left after filtering"):
        Interactions.from_frame(df, rating_col="rating", threshold=4)


def test_kcore_is_iterative():
    # user 3 has one interaction; removing it leaves item 9 with one, which must go too
    df = frame(user=[1, 1, 2, 2, 3, 1], item=[5, 6, 5, 6, 9, 9])
    data = Interactions.from_frame(df, kcore=2)
    assert set(data.item_ids) == {5, 6} and set(data.user_ids) == {1, 2}


def test_fingerprint_changes_with_content():
    a = Interactions.from_frame(frame(user=[1, 2], item=[1, 2]))
    b = Interactions.from_frame(frame(user=[1, 2], item=[2, 1]))
    assert a.fingerprint() != b.fingerprint()
    assert a.fingerprint() == Interactions.from_frame(frame(user=[1, 2], item=[1, 2])).fingerprint()


def test_keep_filtered_ids_keeps_the_catalogue():
    df = frame(user=[1, 1, 2], item=["a", "b", "c"], rating=[5, 1, 2])
    data = Interactions.from_frame(df, rating_col="rating", threshold=4, keep_filtered_ids=True)
    assert list(data.item_ids) == ["a", "b", "c"] and list(data.user_ids) == [1, 2]
    assert data.nnz == 1 and data.matrix[0, 0] == 1
