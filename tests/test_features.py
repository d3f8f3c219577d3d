import numpy as np
import pandas as pd
import pytest

from advrec.data.features import FeatureEncoder
from advrec.errors import AdvrecError

USERS = pd.DataFrame(
    {
        "gender": ["F", "M", "F", "X"],
        "age": [20.0, 40.0, 30.0, 90.0],
        "occupation": ["a", "b", "a", "c"],
    }
)


def test_encoders_see_training_users_only():
    enc = FeatureEncoder(categorical=["gender"], numeric=["age"]).fit(USERS, [0, 1, 2])
    out = enc.transform(USERS)
    assert enc.dim == 3  # F, M, age
    assert out[3, :2].tolist() == [0.0, 0.0]  # "X" only in a held-out user: no column
    mean, std = 30.0, np.std([20.0, 40.0, 30.0])  # the held-out 90 does not move them
    assert out[:, 2] == pytest.approx((USERS.age.to_numpy() - mean) / std)


def test_buckets_one_hot():
    enc = FeatureEncoder(numeric=["age"], buckets={"age": [25, 35, 50]}).fit(USERS, [0, 1])
    assert enc.transform(USERS).argmax(1).tolist() == [0, 2, 1, 3]


def test_unknown_column_and_missing_user_are_clear_errors():
    with pytest.raises(AdvrecError, match=r"\['zip'\] not in the feature table"):
        FeatureEncoder(categorical=["zip"]).fit(USERS, [0])
    holes = USERS.copy()
    holes.loc[2, ["gender", "age", "occupation"]] = None
    with pytest.raises(AdvrecError, match="1 user\\(s\\) have no feature row"):
        FeatureEncoder(categorical=["gender"], numeric=["age"]).fit(holes, [0, 1])
