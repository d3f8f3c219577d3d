"""User sets (friends) as features, the social baselines, the social CFGAN condition and the
Last.fm cold-start presets."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from advrec.data.datamodule import RecDataModule
from advrec.data.features import UserSet
from advrec.data.interactions import Interactions
from advrec.errors import AdvrecError
from advrec.models.cfgan import CFGAN
from advrec.models.dropoutnet import DropoutNet
from advrec.models.gar import GAR
from advrec.models.loco import LoCo
from advrec.models.pop import TopPop
from advrec.models.social import SocialEASE, SocialPop
from tests.helpers import DATA_DIR, needs_data, one_line_refusal, quiet_trainer, run_cli


# -- set-valued features encode exactly ----------------------------------------------------
def test_an_edge_list_encodes_as_the_hand_written_multi_hot(tmp_path):
    path = tmp_path / "friends.csv"
    path.write_text("user,other\nb,a\nc,a\nc,c\n")  # c,c: a self-pair, dropped
    m = UserSet("friends", str(path)).read(np.array(["a", "b", "c", "d"]))
    want = np.array([[0, 1, 1, 0], [1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], np.float32)
    assert (m.toarray() == want).all()  # symmetric; d has no friend: an all-zero row
    directed = UserSet("friends", str(path), symmetric=False).read(np.array(["a", "b", "c"]))
    assert directed.toarray().tolist() == [[0, 0, 0], [1, 0, 0], [1, 0, 0]]


def test_an_npz_set_maps_numeric_ids_written_as_floats(tmp_path):
    sp.save_npz(tmp_path / "f.npz", sp.csr_matrix(np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]])))
    m = UserSet("friends", str(tmp_path / "f.npz"), format="npz").read(
        np.array(["2.0", "0.0", "1.0"])  # the data's own order, Heater's spelling
    )
    assert m.toarray().tolist() == [[0, 0, 1], [0, 0, 1], [1, 1, 0]]


@pytest.mark.parametrize(
    ("text", "kw", "words"),
    [
        ("user,other\na,zz\n", {}, "names 1 user id(s) the data does not have (e.g. ['zz'])"),
        ("user,other\n", {}, "holds no pairs"),
        ("user,other\na\n", {}, "lack a user or an other user"),
        ("who,whom\na,b\n", {}, "column(s) ['user', 'other'] not found"),
    ],
)
def test_a_bad_set_file_is_one_clear_error(tmp_path, text, kw, words):
    (tmp_path / "f.csv").write_text(text)
    with pytest.raises(AdvrecError, match=__import__("re").escape(words)):
        UserSet("friends", str(tmp_path / "f.csv"), **kw).read(np.array(["a", "b"]))


def test_unknown_ids_can_be_left_out_on_request(tmp_path):
    (tmp_path / "f.csv").write_text("user,other\na,zz\na,b\n")
    m = UserSet("friends", str(tmp_path / "f.csv"), unknown="drop").read(np.array(["a", "b"]))
    assert m.nnz == 2


# -- planted structure: friends share tastes ----------------------------------------------
class Circles:
    """Users in 6 circles of friends; a circle's members pick 5 of its 10 artists. Circle
    sizes differ, so TopPop prefers the big circle's artists; only the friends tell a user's.
    Item 60 is a marker only cold (held-out) users have."""

    n_users, n_items = 180, 61

    def load(self) -> Interactions:
        rng = np.random.default_rng(0)
        circle = rng.choice(6, self.n_users, p=[0.3, 0.25, 0.15, 0.1, 0.1, 0.1])
        rows = np.repeat(np.arange(self.n_users), 5)
        cols = np.concatenate([rng.choice(10, 5, replace=False) + 10 * c for c in circle])
        self.circle = circle
        data = Interactions.from_codes(
            rows, cols, np.array([f"u{u}" for u in range(self.n_users)]), np.arange(self.n_items)
        )
        return data

    def friends_file(self, path) -> None:
        rng = np.random.default_rng(1)
        pairs = []
        for u in range(self.n_users):
            mates = np.flatnonzero(self.circle == self.circle[u])
            for v in rng.choice(mates, 4):
                pairs.append((f"u{u}", f"u{v}"))
        pd.DataFrame(pairs, columns=["user", "other"]).to_csv(path, index=False)


@pytest.fixture(scope="module")
def circles(tmp_path_factory):
    root = tmp_path_factory.mktemp("circles")
    source = Circles()
    data = source.load()
    source.friends_file(root / "friends.csv")
    dm = RecDataModule(
        source=source,
        split={"method": "cold_users", "test_fraction": 0.3},
        val_fraction=0.2,
        features={"sets": {"friends": {"path": str(root / "friends.csv")}}},
        seed=0,
    )
    dm.setup()
    assert dm.n_users == data.n_users
    return dm


def _test_ndcg(model, dm, epochs=1) -> float:
    from advrec.models.base import ClosedForm

    closed = isinstance(model, ClosedForm)
    trainer = quiet_trainer(max_epochs=epochs, limit_train_batches=0 if closed else None)
    trainer.fit(model, datamodule=dm)
    return trainer.test(model, datamodule=dm, verbose=False)[0]["test/ndcg@5"]


def test_every_social_model_beats_toppop_where_friends_share_tastes(circles):
    dm, kw = circles, circles.model_kwargs()
    blocks = kw["feature_blocks"]
    pop = _test_ndcg(TopPop(dm.n_users, dm.n_items, ks=(5,)), dm)
    models = {
        "socialpop": SocialPop(dm.n_users, dm.n_items, feature_blocks=blocks, ks=(5,)),
        "socialease": SocialEASE(dm.n_users, dm.n_items, lam=10.0, feature_blocks=blocks, ks=(5,)),
        "loco": LoCo(dm.n_users, dm.n_items, rank=20, feature_blocks=blocks, ks=(5,)),
    }
    got = {name: _test_ndcg(m, dm) for name, m in models.items()}
    torch.manual_seed(0)
    cfgan = CFGAN(
        dm.n_users, dm.n_items, rows="users", condition="social", n_features=kw["n_features"],
        feature_blocks=blocks, g_hidden=(32,), d_hidden=(16,), lr_g=1e-3, lr_d=1e-3, ks=(5,),
    )  # fmt: skip
    got["cfgan social"] = _test_ndcg(cfgan, dm, epochs=30)
    gar = GAR(dm.n_users, dm.n_items, n_features=kw["n_features"], dim=16, batch_size=32, ks=(5,))
    got["gar"] = _test_ndcg(gar, dm, epochs=5)
    gar = GAR(dm.n_users, dm.n_items, n_features=kw["n_features"], feature_blocks=blocks,
              content="neighbours", dim=16, batch_size=32, ks=(5,))  # fmt: skip
    got["gar neighbours"] = _test_ndcg(gar, dm, epochs=5)
    dropoutnet = DropoutNet(
        dm.n_users, dm.n_items, n_features=kw["n_features"], dim=16, hidden=(64,), rank=16,
        n_top=20, n_random=20, lr=0.05, batch_size=32, ks=(5,),
    )  # fmt: skip
    got["dropoutnet"] = _test_ndcg(dropoutnet, dm, epochs=20)
    for name, value in got.items():
        assert value > pop + 0.1, (name, value, pop)


def test_socialpop_and_loco_by_hand():
    """Users 0-2 warm, user 3 cold with friends {0, 1}; items 0-2."""
    history = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]], np.float32))
    friends = torch.tensor([[0, 0, 1, 0], [0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0]])
    blocks = {"friends": [0, 4]}
    pop = SocialPop(4, 3, feature_blocks=blocks, ks=(1,))
    pop.fit_matrix(history)
    pop.prepare_scoring(history)
    scores = pop.score_batch({"features": friends.float(), "history": torch.zeros(4, 3)})
    counts = torch.tensor([[0, 0, 1], [0, 0, 0], [1, 1, 0], [1, 2, 0]], dtype=torch.float32)
    popularity = torch.tensor([1, 2, 1]) / 3.0  # counts / (max + 1): a tie-break below 1
    assert torch.allclose(scores, counts + popularity)
    # LoCo at full rank and reg -> 0 is least squares from friends to items: with F the warm
    # users' friend rows and R their items, W = pinv(F) R
    loco = LoCo(4, 3, rank=3, reg=1e-9, feature_blocks=blocks, ks=(1,))
    loco.take_data(type("D", (), {"user_features": friends.float()})())
    loco.fit_matrix(history)
    f = friends[:3].double()
    w = torch.linalg.pinv(f) @ torch.from_numpy(history[:3].toarray()).double()
    got = loco.score_batch({"features": friends.float()})
    want = friends[3:].double() @ w
    assert torch.allclose(got[3:].double(), want, atol=1e-4), (got[3], want)
    loco.hparams.rank = 2  # a grid search changes the rank between fits
    loco.fit_matrix(history)
    assert loco.project.shape == (4, 2) and loco.decode.shape == (2, 3)


def test_no_cold_users_interaction_reaches_training(tmp_path, monkeypatch):
    """Item m is a marker only the cold (test-file) users have: it is in no training batch,
    no training pseudo-history, no fitted state of any social model."""
    rng = np.random.default_rng(0)
    warm = [(f"w{u}", f"i{i}") for u in range(60) for i in rng.choice(20, 5, replace=False)]
    cold = [(f"c{u}", i) for u in range(20) for i in ("m", f"i{u % 20}")]
    pd.DataFrame(warm, columns=["user", "item"]).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame(cold, columns=["user", "item"]).to_csv(tmp_path / "test.csv", index=False)
    friends = [(f"c{u}", f"w{3 * u}") for u in range(20)] + [(f"w{u}", f"c{u % 20}")
                                                              for u in range(60)]  # fmt: skip
    pd.DataFrame(friends, columns=["user", "other"]).to_csv(tmp_path / "f.csv", index=False)
    from advrec.data.sources import Predefined

    dm = RecDataModule(
        source=Predefined(
            str(tmp_path / "train.csv"),
            str(tmp_path / "test.csv"),
            format="csv",
            columns={"rating": None},
            test_only="keep",
        ),  # fmt: skip
        split={"method": "predefined", "val_method": "random_holdout"},
        val_fraction=0.1,
        features={"sets": {"friends": {"path": str(tmp_path / "f.csv")}}},
        seed=0,
    )
    dm.setup()
    m = int(np.flatnonzero(dm.data.item_ids == "m")[0])
    assert dm.test_matrix[:, m].nnz == 20 and dm.train_full_matrix[:, m].nnz == 0
    kw = dm.model_kwargs()
    seen = []
    orig = CFGAN.condition_of

    def spy(self, x, features):
        c = orig(self, x, features)
        if self.training:  # a training batch: its rows and their pseudo-histories
            seen.append(float(x[:, m].abs().sum() + c[:, m].abs().sum()))
        return c

    monkeypatch.setattr(CFGAN, "condition_of", spy)
    gan = CFGAN(
        dm.n_users, dm.n_items, rows="users", condition="history+social",
        n_features=kw["n_features"], feature_blocks=kw["feature_blocks"], g_hidden=(8,),
        d_hidden=(8,), ks=(5,),
    )  # fmt: skip
    quiet_trainer(max_epochs=2).fit(gan, datamodule=dm)
    assert len(seen) > 4 and max(seen) == 0
    blocks = kw["feature_blocks"]
    for model, state in (
        (SocialPop(dm.n_users, dm.n_items, feature_blocks=blocks), lambda x: x.popularity[m]),
        (SocialEASE(dm.n_users, dm.n_items, feature_blocks=blocks),
         lambda x: x.B[m].abs().sum() + x.B[:, m].abs().sum()),
        (LoCo(dm.n_users, dm.n_items, rank=5, feature_blocks=blocks),
         lambda x: x.decode[:, m].abs().sum()),
    ):  # fmt: skip
        model.take_data(dm.fit_data(model.plan()))
        model.fit_checked(dm.train_full_matrix)  # the refit's matrix: train + validation
        assert float(state(model)) == 0.0, type(model).__name__


@needs_data("heater-lastfm-coldstart", "train.csv")
def test_the_heater_preset_reproduces_the_files(tmp_path):
    """The published split: 1,136 warm users train, vali.csv validates, test.csv tests, the
    pairs of the files (less those of artists training never has, which Heater does not
    rank), the friendship matrix whole."""
    from hydra import compose, initialize_config_dir

    from advrec.config import CONF_DIR
    from advrec.run.build import build_datamodule

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["data=lastfm_coldstart_heater", f"paths.data_dir={DATA_DIR}",
                       f"paths.cache_dir={tmp_path}", "paths.output_dir=."],
        )  # fmt: skip
    dm = build_datamodule(cfg)
    files = {k: pd.read_csv(DATA_DIR / "heater-lastfm-coldstart" / f"{k}.csv")
             for k in ("train", "vali", "test")}  # fmt: skip
    warm_items = set(files["train"]["iid"])
    d = dm.describe()
    assert d["n_train"] == len(files["train"])
    assert d["n_val"] == int(files["vali"]["iid"].isin(warm_items).sum())
    assert d["n_test"] == int(files["test"]["iid"].isin(warm_items).sum())
    assert d["n_items"] == len(warm_items) == 12_850
    tested = files["test"][files["test"]["iid"].isin(warm_items)]
    assert d["n_test_users"] == tested["uid"].nunique()
    assert (np.diff(dm.train_matrix.indptr) > 0).sum() == 1_136  # + vali's users at the refit
    npz = sp.load_npz(DATA_DIR / "heater-lastfm-coldstart" / "user_content.npz").tocsr()
    assert npz.nnz == 25_434
    present = np.array([float(u) for u in dm.data.user_ids]).astype(int)  # ids as floats
    assert d["n_friends_pairs"] == npz[present][:, present].nnz  # friends who have pairs


# -- through the entry points --------------------------------------------------------------
@pytest.fixture(scope="module")
def social_files(tmp_path_factory):
    """Split files of the circles (cold users only in the test file) and their friends."""
    root = tmp_path_factory.mktemp("social")
    source = Circles()
    data = source.load()
    source.friends_file(root / "friends.csv")
    rows, cols = data.coo()
    log = pd.DataFrame({"user": data.user_ids[rows], "item": [f"a{c}" for c in cols]})
    cold = log["user"].isin([f"u{u}" for u in range(0, Circles.n_users, 4)])
    log[~cold].to_csv(root / "train.csv", index=False)
    log[cold].to_csv(root / "test.csv", index=False)
    return root


def _social_args(root, friends="friends.csv") -> list[str]:
    return [
        "data=split_files",
        f"data.source.train={root / 'train.csv'}",
        f"data.source.test={root / 'test.csv'}",
        "data.source.test_only=keep",
        f"+data.features.sets.friends.path={root / friends}",
        "logger=csv",
        "ks=[5]",
        "protocol.monitor=val/ndcg@5",
    ]


def test_recommend_serves_a_new_user_from_a_friend_list(social_files, tmp_path):
    run = tmp_path / "run"
    run_cli("train", *_social_args(social_files), "model=socialpop", f"hydra.run.dir={run}",
            cwd=tmp_path)  # fmt: skip
    m = json.loads((run / "metrics.json").read_text())
    assert m["dataset"]["n_users_without_friends"] == 0 and m["test/ndcg@5"] > 0.35
    circle = Circles()
    circle.load()
    mates = [f"u{u}" for u in np.flatnonzero(circle.circle == 5)[:3]]  # the smallest circle
    new = pd.DataFrame({"user": ["new1", "new2"], "friends": [";".join(mates), ""]})
    new.to_csv(tmp_path / "new.csv", index=False)
    out = tmp_path / "recs.csv"
    ckpt = run / "checkpoints" / "final.ckpt"
    run_cli("recommend", f"ckpt_path={ckpt}", f"new_users_file={tmp_path / 'new.csv'}", "k=5",
            f"output={out}", cwd=tmp_path)  # fmt: skip
    recs = pd.read_csv(out)
    first = recs[recs.user_id == "new1"]["item_id"].str[1:].astype(int)
    assert (first // 10 == 5).all()  # the friends' circle's artists, raw ids
    pop = recs[recs.user_id == "new2"]["item_id"].tolist()  # no friends: TopPop
    assert len(pop) == 5
    new.assign(friends=["u1;nobody", ""]).to_csv(tmp_path / "bad.csv", index=False)
    proc = run_cli("recommend", f"ckpt_path={run / 'checkpoints' / 'final.ckpt'}",
                   f"new_users_file={tmp_path / 'bad.csv'}", f"output={tmp_path / 'x.csv'}",
                   cwd=tmp_path, check=False)  # fmt: skip
    one_line_refusal(proc, "['nobody']")
    assert not (tmp_path / "x.csv").exists()
    new.drop(columns="friends").to_csv(tmp_path / "bad.csv", index=False)  # forgot the column
    proc = run_cli("recommend", f"ckpt_path={run / 'checkpoints' / 'final.ckpt'}",
                   f"new_users_file={tmp_path / 'bad.csv'}", f"output={tmp_path / 'x.csv'}",
                   cwd=tmp_path, check=False)  # fmt: skip
    one_line_refusal(proc, "has no 'friends' column")
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.parametrize(
    ("friends", "extra", "words"),
    [
        ("unknown.csv", [], "names 1 user id(s) the data does not have"),
        ("malformed.csv", [], "lack a user or an other user"),
        ("empty.csv", [], "holds no pairs"),
        ("friends.csv", ["model=socialpop", "+data.features.sets.friends.format=xml"],
         "format='xml'"),
        ("nofile.csv", [], "(data.features.sets.friends.path="),
        ("friends.csv", ["+data.features.sets.friends.symetric=true"],
         "unexpected keyword argument 'symetric'"),
        ("friends.csv", ["data.features.sets.friends=friends.csv"],
         "data.features.sets.friends='friends.csv': give its settings"),
    ],
)  # fmt: skip
def test_a_bad_friends_file_or_setting_is_one_line_and_writes_nothing(
    social_files, tmp_path, friends, extra, words
):
    (social_files / "unknown.csv").write_text("user,other\nu1,u2\nu1,stranger\n")
    (social_files / "malformed.csv").write_text("user,other\nu1,u2\nu3\n")
    (social_files / "empty.csv").write_text("user,other\n")
    run = tmp_path / "run"
    proc = run_cli("train", *_social_args(social_files, friends), "model=socialpop", *extra,
                   f"hydra.run.dir={run}", cwd=tmp_path, check=False)  # fmt: skip
    one_line_refusal(proc, words)
    assert not (run / "metrics.json").exists() and not (run / "checkpoints").exists()


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (["model=socialease"], "SocialEASE"),
        (["model=loco"], "LoCo"),
        (["model=cfgan", "model.rows=users", "model.condition=social"], "CFGAN"),
        (["model=gar", "model.content=neighbours", "data.source.with_features=true"], "GAR"),
    ],
)
def test_a_social_model_without_a_user_set_is_one_line(tmp_path, args, name):
    proc = run_cli("train", *args, "data=synthetic", f"hydra.run.dir={tmp_path}",
                   cwd=tmp_path, check=False)  # fmt: skip
    one_line_refusal(proc, f"{name} reads the user set 'friends'", "data.features.sets")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["model=gar"], "GAR generates a user's embedding from their features, and the data"),
        (["model=dropoutnet"], "DropoutNet scores a cold user from their features, and the data"),
        (["model=gar", "model.content=bogus", "data.source.with_features=true"],
         "model.content='bogus': choose features or neighbours"),
        (["model=dropoutnet", "model.dropout=1.5", "data.source.with_features=true"],
         "model.dropout=1.5: it must be a number in [0, 1]"),
    ],
)  # fmt: skip
def test_a_cold_start_generator_without_features_or_with_bad_settings_is_one_line(
    tmp_path, args, words
):
    proc = run_cli("train", *args, "data=synthetic", f"hydra.run.dir={tmp_path}",
                   cwd=tmp_path, check=False)  # fmt: skip
    one_line_refusal(proc, words)
    assert not (tmp_path / "metrics.json").exists()


def test_gar_and_dropoutnet_skip_training_rows_without_items():
    """Warm splits keep users without training items as rows (a DDP shard met one: GAR's
    item draw crashed on the empty row)."""
    gar = GAR(4, 5, n_features=3, dim=4)
    gar._warm_ids = torch.arange(4)
    x = torch.tensor([[0, 0, 0, 0, 0], [1, 0, 1, 0, 0]], dtype=torch.float32)
    batch = {"x": x, "ids": torch.tensor([0, 1]), "features": torch.rand(2, 3)}
    items, at = gar._pairs(batch)
    assert (at == 1).all() and set(items.tolist()) <= {0, 2}
    assert torch.isfinite(gar.d_loss(batch)[0]) and torch.isfinite(gar.g_loss(batch)[0])
    assert gar.d_loss({**batch, "x": torch.zeros(2, 5)}) is None
    net = DropoutNet(4, 5, n_features=3, dim=4, hidden=(8,), rank=4, n_top=2, n_random=2)
    net.warm[1] = True
    net.log = lambda *a, **k: None
    assert torch.isfinite(net.training_step(batch, 0))
    assert net.training_step({**batch, "ids": torch.tensor([0, 2])}, 0) is None


def test_gain_by_friends_bins_each_test_user_once_and_socialpop_gains_only_with_friends(
    social_files, tmp_path
):
    """bench/gain_by_friends.py over real runs: every test user in one bin, and SocialPop,
    which backs off to TopPop's order, gains nothing where no friend has a known history."""
    import subprocess
    import sys
    from pathlib import Path

    from bench.gain_by_friends import bin_names, friends_with_history

    friends = sp.csr_matrix(np.array([[0, 1, 1], [1, 0, 0], [1, 0, 0]]))
    known = sp.csr_matrix(np.array([[1, 0], [0, 0], [0, 1]]))
    assert friends_with_history(friends, known).tolist() == [1, 1, 1]
    assert bin_names() == ["0", "1", "2-3", "4-7", "8-15", "16+"]
    # u0, u4 and u8 (test users) lose their friends but one another: friends without history
    pairs = pd.read_csv(social_files / "friends.csv")
    lonely = {"u0", "u4", "u8"}
    keep = ~(pairs["user"].isin(lonely) | pairs["other"].isin(lonely))
    among = pd.DataFrame({"user": ["u0", "u4"], "other": ["u4", "u8"]})
    pd.concat([pairs[keep], among]).to_csv(tmp_path / "lonely.csv", index=False)
    for model in ("pop", "socialpop"):
        run_cli("train", *_social_args(social_files, tmp_path / "lonely.csv"), f"model={model}",
                f"hydra.run.dir={tmp_path / model}", cwd=tmp_path)  # fmt: skip
    script = Path(__file__).resolve().parents[1] / "bench" / "gain_by_friends.py"
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "pop"), str(tmp_path / "socialpop"),
         "--baseline", "TopPop", "--metric", "ndcg@5"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    )  # fmt: skip
    out = json.loads(proc.stdout)["models"]
    n_test = json.loads((tmp_path / "pop" / "metrics.json").read_text())["test/n_users"]
    for label in ("TopPop", "SocialPop"):
        assert sum(b["users"] for b in out[label]["by_bin"]) == n_test
    social = {b["bin"]: b for b in out["SocialPop"]["by_bin"]}
    with_friends = [b for name, b in social.items() if name != "0" and b["users"]]
    assert with_friends and all(b["gain"] > 0.1 for b in with_friends)
    assert social["0"]["users"] == 3 and social["0"]["gain"] == 0.0
