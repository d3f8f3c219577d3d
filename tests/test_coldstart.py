"""User features end to end: cold-start split, feature-conditioned CFGAN, GroupPop, and
recommendations for users never seen in training."""

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from advrec.data.batches import Plan
from advrec.data.datamodule import RecDataModule
from advrec.data.interactions import SHOWN_TEST, SHOWN_VAL, TEST, TRAIN, Interactions
from advrec.data.splits import VAL, make_split
from advrec.errors import AdvrecError
from advrec.models.cfgan import CFGAN
from advrec.models.pop import GroupPop, TopPop
from tests.helpers import one_line_refusal, quiet_trainer, run_cli


class GroupTaste:
    """Toy data where taste is a function of one feature: a user of group g picks 6 of the 10
    items of block g; `colour` is noise. Groups differ in size, so TopPop favours one block."""

    def __init__(self, n_users: int = 400, seed: int = 0):
        self.n_users, self.seed = n_users, seed
        self.overrides: dict = {}  # (row, column) -> value, to plant feature values

    def load(self) -> Interactions:
        rng = np.random.default_rng(self.seed)
        group = rng.choice(4, self.n_users, p=[0.4, 0.3, 0.2, 0.1])
        rows = np.repeat(np.arange(self.n_users), 6)
        cols = np.concatenate([rng.choice(10, 6, replace=False) + 10 * g for g in group])
        data = Interactions.from_codes(rows, cols, np.arange(self.n_users), np.arange(40))
        data.user_features = pd.DataFrame(
            {
                "group": [f"g{g}" for g in group],
                "colour": rng.choice(["red", "blue", "green"], self.n_users),
                "age": rng.integers(18, 70, self.n_users).astype(float),
            }
        )
        for (row, col), value in self.overrides.items():
            data.user_features.loc[row, col] = value
        return data


def cold_dm(source, val_fraction: float = 0.0) -> RecDataModule:
    dm = RecDataModule(
        source=source,
        split={"method": "cold_users", "test_fraction": 0.2},
        val_fraction=val_fraction,
        features={"categorical": ["group", "colour"], "numeric": ["age"]},
        batch_size=32,
        seed=0,
    )
    dm.setup()
    return dm


def users_of(m) -> set:
    return set(np.flatnonzero(np.diff(m.indptr) > 0).tolist())


def test_cold_users_split_holds_out_whole_users():
    data = GroupTaste().load()
    split = make_split(data, method="cold_users", test_fraction=0.2, val_fraction=0.1, seed=3)
    train, val, test = users_of(split.train), users_of(split.val), users_of(split.test)
    assert len(test) == 80 and len(val) == 32  # 20 % of 400, then 10 % of the other 320
    assert not (train & test) and not (train & val) and not (val & test)
    assert len(train | val | test) == 400
    again = make_split(data, method="cold_users", test_fraction=0.2, val_fraction=0.1, seed=3)
    assert np.array_equal(split.folds, again.folds)
    assert (split.folds == VAL).sum() == 6 * 32


def test_cold_users_are_not_trained_on_and_rank_every_item():
    dm = cold_dm(GroupTaste())
    test_users = users_of(dm.test_matrix)
    assert not test_users & set(dm.train_rows().tolist())
    batch = next(iter(dm.test_dataloader()))
    cold = torch.tensor([u in test_users for u in batch["users"].tolist()])
    assert batch["history"][cold].sum() == 0  # nothing to mask: every item is a candidate
    assert torch.equal(batch["features"], dm.user_features[batch["users"]])
    train_batch = next(iter(dm.train_dataloader(Plan(features=True))))
    assert torch.equal(train_batch["features"], dm.user_features[train_batch["ids"]])


def test_only_cold_start_splits_drop_users_from_training():
    warm = RecDataModule(
        source=GroupTaste(), split={"method": "random_holdout", "test_fraction": 0.9}, seed=0
    )
    warm.setup()
    assert (np.diff(warm.train_matrix.indptr) == 0).any()  # users without training items...
    assert len(warm.train_rows()) == warm.n_users  # ...still train, as they always have


@pytest.mark.parametrize("n", [1, 3, 5])
def test_few_shot_reveals_n_items_that_are_never_targets_nor_trained_on(n):
    data = GroupTaste().load()
    pure = make_split(data, method="cold_users", test_fraction=0.2, val_fraction=0.1, seed=3)
    split = make_split(
        data, method="cold_users", test_fraction=0.2, val_fraction=0.1, seed=3, reveal=n
    )
    assert np.array_equal(split.folds == TRAIN, pure.folds == TRAIN)  # the same users are cold
    rows, _ = data.coo()
    for fold, shown in ((TEST, SHOWN_TEST), (VAL, SHOWN_VAL)):
        users = np.unique(rows[pure.folds == fold])
        per_user = np.bincount(rows[split.folds == shown], minlength=data.n_users)[users]
        assert (per_user == min(n, 5)).all()  # 6 items each: at most all but one shown
        targets = np.bincount(rows[split.folds == fold], minlength=data.n_users)[users]
        assert (targets == 6 - min(n, 5)).all()
    # revealed items are history, never targets; never trained on while the user is cold
    assert split.test_history.multiply(split.test).nnz == 0
    assert split.val_history.multiply(split.val).nnz == 0
    assert split.train.multiply(split.test_history - split.train).nnz == 0
    assert (split.val_history - split.train).nnz == (split.folds == SHOWN_VAL).sum()
    assert (split.test_history - split.train_full).nnz == (split.folds == SHOWN_TEST).sum()
    dm = RecDataModule(
        source=GroupTaste(), split={"method": "cold_users", "test_fraction": 0.2, "reveal": n},
        val_fraction=0.1, seed=3,
    )  # fmt: skip
    dm.setup()
    cold = set(rows[np.isin(pure.folds, (TEST, VAL))].tolist())
    assert not cold & set(dm.train_rows().tolist())
    assert dm.describe()["n_revealed"] == (split.folds >= SHOWN_VAL).sum()
    batch = next(iter(dm.test_dataloader()))
    shown = dm.test_history_matrix[batch["users"].numpy()].toarray()
    assert np.array_equal(batch["history"].numpy(), shown)  # scored with what they reveal
    assert not (batch["history"] * batch["target"]).any()


def test_few_shot_needs_a_cold_start_split_and_a_count():
    data = GroupTaste().load()
    with pytest.raises(AdvrecError, match="split.reveal needs a cold-start split"):
        make_split(data, method="random_holdout", reveal=3)
    for bad in (-1, 1.5, "3", True):
        with pytest.raises(AdvrecError, match="split.reveal="):
            make_split(data, method="cold_users", reveal=bad)


def test_a_predefined_split_holds_out_users_without_training_interactions(tmp_path):
    """Heater's files: users only in the validation / test file are cold; they are no
    training rows (they were empty rows of every trained model's batches), and they can
    reveal items like the cold users of a cold_users split."""
    from advrec.data.sources import Predefined

    log = pd.DataFrame({"user": np.repeat(np.arange(30), 4), "item": np.tile(np.arange(4), 30)})
    for name, users in (("train", range(20)), ("vali", range(20, 25)), ("test", range(25, 30))):
        log[log.user.isin(users)].to_csv(tmp_path / f"{name}.csv", index=False)
    for reveal in (0, 2):
        dm = RecDataModule(
            source=Predefined(
                str(tmp_path / "train.csv"), str(tmp_path / "test.csv"),
                val=str(tmp_path / "vali.csv"), format="csv", columns={"rating": None},
                test_only="keep",
            ),
            split={"method": "predefined", "reveal": reveal}, val_fraction=0.1, seed=0,
        )  # fmt: skip
        dm.setup()
        assert len(dm.train_rows()) == 20
        assert len(dm.with_validation_in_train().train_rows()) == 25  # the refit trains them
        assert dm.describe()["n_test"] == 5 * (4 - reveal)


def test_encoder_never_sees_held_out_users():
    source = GroupTaste()
    split = make_split(source.load(), method="cold_users", test_fraction=0.2, seed=0)
    cold = sorted(users_of(split.test))[0]
    source.overrides = {(cold, "colour"): "only-cold", (cold, "age"): 1000.0}
    dm = cold_dm(source)
    enc = dm.feature_encoder
    assert "only-cold" not in enc._categories["colour"]
    train = sorted(users_of(dm.train_matrix))
    ages = dm.data.user_features["age"].to_numpy()[train]
    assert enc._moments["age"] == pytest.approx((ages.mean(), ages.std()))
    lo, hi = enc.blocks["colour"]
    assert dm.user_features[cold, lo:hi].sum() == 0  # unseen category: no column lights up


def test_features_only_generator_learns_a_taste_that_depends_on_one_feature():
    torch.manual_seed(0)
    dm = cold_dm(GroupTaste())
    results = {}
    for name in ("toppop", "cfgan"):
        if name == "toppop":
            model = TopPop(dm.n_users, dm.n_items, ks=(5,))
        else:
            model = CFGAN(
                dm.n_users,
                dm.n_items,
                rows="users",
                condition="features",
                n_features=dm.model_kwargs()["n_features"],
                g_hidden=(32,),
                d_hidden=(32,),
                lr_g=1e-3,
                lr_d=1e-3,
                reg_g=0.0,
                ks=(5,),
            )
        trainer = quiet_trainer(max_epochs=1 if name == "toppop" else 40, limit_val_batches=0)
        trainer.fit(model, datamodule=dm)
        results[name] = trainer.test(model, datamodule=dm, verbose=False)[0]["test/ndcg@5"]
    # TopPop ranks the biggest group's block first (~0.23); an oracle of the group scores 1
    assert results["cfgan"] > results["toppop"] + 0.3, results


def test_group_popularity_backs_off_to_coarser_groups():
    blocks = {"gender": [0, 2], "occ": [2, 5]}
    model = GroupPop(
        3, 4, levels=[["gender", "occ"], ["gender"]], min_users=2, feature_blocks=blocks
    )

    def feats(gender: int, occ: int | None) -> list:
        row = [0.0] * 5
        row[gender] = 1.0
        if occ is not None:
            row[2 + occ] = 1.0
        return row

    # users 0, 1: (F, a) hold items {0}, {0, 1}; user 2: (F, b) {3}; user 3: (M, c) {2}
    model._features = torch.tensor([feats(0, 0), feats(0, 0), feats(0, 1), feats(1, 2)])
    matrix = sp.csr_matrix(
        (np.ones(5, np.float32), ([0, 1, 1, 2, 3], [0, 0, 1, 3, 2])), shape=(4, 4)
    )
    model.fit_matrix(matrix)
    new = torch.tensor([feats(0, 0), feats(0, 1), feats(0, None), feats(1, 2)])
    top = model.score_batch({"features": new}).argmax(1).tolist()
    # (F, a): its own group (2 users); (F, b) and an unseen occupation: 1 user or none ->
    # all F users (item 0 twice); (M, c): 1 user, and M as a whole has 1 user -> global
    assert top == [0, 0, 0, 0]
    scores = model.score_batch({"features": new})
    assert scores[0, 1] > scores[0, 3]  # (F, a) users also hold item 1
    overall = torch.tensor([2.0, 1.0, 1.0, 1.0])
    assert torch.allclose(scores[3], overall + overall / 3)  # global counts + tie-break


def test_group_pop_needs_groupable_columns():
    with pytest.raises(Exception, match="standardised numeric column"):
        GroupPop(3, 4, levels=[["age"]], feature_blocks={"age": [0, 1]})
    with pytest.raises(Exception, match="not an encoded feature column"):
        GroupPop(3, 4, levels=[["zip"]], feature_blocks={"age": [0, 1]})
    with pytest.raises(Exception, match="needs user features"):
        GroupPop(3, 4)


# -- through the entry points ---------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """An interaction log with string ids and a features file with one row per user."""
    root = tmp_path_factory.mktemp("feats")
    data = GroupTaste(n_users=60).load()
    rows, cols = data.coo()
    pd.DataFrame({"user": [f"u{r}" for r in rows], "item": [f"i{c}" for c in cols]}).to_csv(
        root / "log.csv", index=False
    )
    feats = data.user_features.assign(user=[f"u{r}" for r in range(60)])
    feats.to_csv(root / "users.csv", index=False)
    feats.drop(index=[7]).to_csv(root / "users_missing.csv", index=False)
    return root


def file_args(root, features: str = "users.csv") -> list[str]:
    return [
        "data=files",
        f"data.source.path={root / 'log.csv'}",
        f"data.features.path={root / features}",
        "data.features.categorical=[group,colour]",
        "data.features.numeric=[age]",
        "data.split.method=cold_users",
        "logger=none",
    ]


def test_user_missing_from_the_feature_file_is_one_clear_error(files, tmp_path):
    proc = run_cli(
        "train",
        *file_args(files, "users_missing.csv"),
        "model=grouppop",
        "model.levels=[[group]]",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 2
    assert "1 user(s) of the interactions have no feature row, e.g. ['u7']" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("condition", ["features", "history+features"])
def test_feature_conditioned_cfgan_through_hydra(files, tmp_path, condition):
    run_cli(
        "train",
        *file_args(files),
        "model.rows=users",
        f"model.condition={condition}",
        "trainer.fast_dev_run=true",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    new = pd.DataFrame({"user": ["n1", "n2"], "group": ["g1", "g3"], "colour": ["red"] * 2})
    new.assign(age=[20.0, 60.0]).to_csv(tmp_path / "new.csv", index=False)
    run_cli(
        "recommend",
        f"ckpt_path={tmp_path / 'checkpoints' / 'final.ckpt'}",
        f"new_users_file={tmp_path / 'new.csv'}",
        "k=3",
        f"output={tmp_path / 'recs.csv'}",
        cwd=tmp_path,
    )
    recs = pd.read_csv(tmp_path / "recs.csv")
    assert recs["user_id"].tolist() == ["n1"] * 3 + ["n2"] * 3
    assert recs["item_id"].str.fullmatch(r"i\d+").all()  # raw item ids


def test_recommend_for_brand_new_users_from_a_features_csv(files, tmp_path):
    run = tmp_path / "run"
    run_cli(
        "train",
        *file_args(files),
        "model=grouppop",
        "model.levels=[[group]]",
        "model.min_users=1",
        f"hydra.run.dir={run}",
        cwd=tmp_path,
    )
    ckpt = run / "checkpoints" / "final.ckpt"
    new = pd.DataFrame(
        {
            "user": ["alice", "bob"],
            "group": ["g2", "g0"],
            "colour": ["red", "pink"],
            "age": [30, 50],
        }
    )
    new.to_csv(tmp_path / "new.csv", index=False)
    out = tmp_path / "recs.csv"
    run_cli(
        "recommend",
        f"ckpt_path={ckpt}",
        f"new_users_file={tmp_path / 'new.csv'}",
        "k=5",
        f"output={out}",
        cwd=tmp_path,
    )
    recs = pd.read_csv(out)
    assert recs["user_id"].tolist() == ["alice"] * 5 + ["bob"] * 5
    # raw item ids of the group's own block (g2: i20..i29, g0: i0..i9)
    assert all(20 <= int(i[1:]) < 30 for i in recs.loc[recs.user_id == "alice", "item_id"])
    assert all(int(i[1:]) < 10 for i in recs.loc[recs.user_id == "bob", "item_id"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dataset"]["n_features"] == 4 + 3 + 1

    # a file without a configured column, or that contradicts itself or the users the model
    # knows: one line each, nothing written
    for bad, words in (
        (new.drop(columns="group"), "['group'] not in the feature table"),
        (new.assign(user=["carol", "carol"]), "['carol'] appear more than once"),
        (
            new.assign(user=["dave", "u3"]),
            "already belong to users the model was trained with (e.g. ['u3'])",
        ),
    ):
        bad.to_csv(tmp_path / "bad.csv", index=False)
        proc = run_cli(
            "recommend",
            f"ckpt_path={ckpt}",
            f"new_users_file={tmp_path / 'bad.csv'}",
            f"output={tmp_path / 'x.csv'}",
            cwd=tmp_path,
            check=False,
        )
        one_line_refusal(proc, words)
        assert not (tmp_path / "x.csv").exists()


def test_grouppop_searches_min_users_on_validation_through_the_entry_point(files, tmp_path):
    """The GroupPop search docs/cold-start.md prints (model.search on a cold-start split): the
    protocol's grid runs before the fit, so the model must get its features before it (it
    crashed)."""
    run_cli(
        "train",
        *file_args(files),
        "model=grouppop",
        "model.levels=[[group],[colour]]",
        "model.search={min_users:[1,100]}",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert [row["min_users"] for row in m["selection"]] == [1, 100]
    # min_users=1 groups by `group` (the taste); 100 backs off to `colour` (noise)
    assert m["hparams"]["min_users"] == 1


@pytest.mark.parametrize(
    ("model", "extra"),
    [("ease", ["model.lam=10"]), ("ials", ["model.dim=8", "trainer.max_epochs=4"])],
)
def test_few_shot_fold_in_through_the_entry_points(files, tmp_path, model, extra):
    """Cold users reveal 3 items (data.split.reveal=3): a warm model folds them in and beats
    TopPop on those users; advrec-recommend serves a new user from the items they list."""
    run = tmp_path / "run"
    args = [*file_args(files), "data.split.reveal=3", "data.split.test_fraction=0.3"]
    run_cli("train", *args, f"model={model}", *extra, f"hydra.run.dir={run}", cwd=tmp_path)
    m = json.loads((run / "metrics.json").read_text())
    run_cli("train", *args, "model=pop", f"hydra.run.dir={tmp_path / 'pop'}", cwd=tmp_path)
    pop = json.loads((tmp_path / "pop" / "metrics.json").read_text())
    d = m["dataset"]
    assert d["n_revealed"] == 3 * (d["n_test_users"] + d["n_val_users"])
    assert m["test/ndcg@10"] > pop["test/ndcg@10"] + 0.2, (m["test/ndcg@10"], pop)
    ckpt = run / "checkpoints" / "final.ckpt"
    new = pd.DataFrame({"user": ["n1"], "items": ["i20;i21;i22"]})
    new.to_csv(tmp_path / "new.csv", index=False)
    out = tmp_path / "recs.csv"
    run_cli("recommend", f"ckpt_path={ckpt}", f"new_users_file={tmp_path / 'new.csv'}", "k=5",
            f"output={out}", cwd=tmp_path)  # fmt: skip
    items = pd.read_csv(out)["item_id"].str[1:].astype(int).tolist()
    assert len(items) == 5 and all(23 <= i < 30 for i in items), items  # block 2, unseen
    for bad, words in (
        (new.drop(columns="items"), "scores a user from their items: add an 'items' column"),
        (new.assign(items=["i20;zz"]), "name item id(s) ['zz'] the model does not know"),
        (new.assign(items=[""]), "row 1 lists no items"),
    ):
        bad.to_csv(tmp_path / "bad.csv", index=False)
        proc = run_cli("recommend", f"ckpt_path={ckpt}", f"new_users_file={tmp_path / 'bad.csv'}",
                       f"output={tmp_path / 'x.csv'}", cwd=tmp_path, check=False)  # fmt: skip
        one_line_refusal(proc, words)
        assert not (tmp_path / "x.csv").exists()


def test_a_model_that_scores_trained_users_only_refuses_new_users(files, tmp_path):
    run_cli("train", *file_args(files), "model=bpr", "trainer.fast_dev_run=true",
            f"hydra.run.dir={tmp_path}", cwd=tmp_path)  # fmt: skip
    pd.DataFrame({"user": ["n1"], "items": ["i1"]}).to_csv(tmp_path / "new.csv", index=False)
    proc = run_cli("recommend", f"ckpt_path={tmp_path / 'checkpoints' / 'final.ckpt'}",
                   f"new_users_file={tmp_path / 'new.csv'}", f"output={tmp_path / 'x.csv'}",
                   cwd=tmp_path, check=False)  # fmt: skip
    one_line_refusal(proc, "BPR cannot score a user it has never seen")
