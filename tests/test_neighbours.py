"""The neighbourhood baselines (RP3beta, UserKNN, SLIM) on hand-checked examples, on planted
structure, and through checkpoints and the entry points."""

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from advrec.data.datamodule import RecDataModule
from advrec.data.interactions import Interactions
from advrec.models.itemknn import ItemKNN
from advrec.models.pop import TopPop
from advrec.models.rp3beta import RP3beta
from advrec.models.slim import SLIM
from advrec.models.userknn import UserKNN
from tests.helpers import data_args, quiet_trainer, run_cli, run_recommend

X3 = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 1], [1, 0, 0]], np.float32))


@pytest.mark.parametrize(
    "beta,normalize,topk,w",
    [
        # P_iu P_ui by hand: rows i0 [.75 .25 0], i1 [.25 .5 .25], i2 [0 .5 .5]; no self loops
        (0.0, False, 3, [[0, 0.25, 0], [0.25, 0, 0.25], [0, 0.5, 0]]),
        # beta=1 divides column j by its 2, 2, 1 users
        (1.0, False, 3, [[0, 0.125, 0], [0.125, 0, 0.25], [0, 0.25, 0]]),
        (1.0, True, 3, [[0, 1, 0], [1 / 3, 0, 2 / 3], [0, 1, 0]]),  # rows summing to 1
        (1.0, False, 1, [[0, 0.125, 0], [0, 0, 0.25], [0, 0.25, 0]]),  # each row's largest
    ],
)
def test_rp3beta_by_hand(beta, normalize, topk, w):
    model = RP3beta(3, 3, topk=topk, alpha=1.0, beta=beta, normalize=normalize)
    model.fit_matrix(X3)
    assert np.allclose(model.sparse["w"].toarray(), w)
    h = torch.from_numpy(X3.toarray())
    assert torch.allclose(model.score(torch.arange(3), h), h @ torch.tensor(w).float())


def test_rp3beta_alpha_raises_the_transition_probabilities():
    model = RP3beta(3, 3, topk=3, alpha=2.0, beta=0.0, normalize=False)
    model.fit_matrix(X3)
    # P_iu^2 P_ui^2: i1 -> users u0, u1 (1/4 each) -> items (1/4 each): 1/16 + 1/16 on i0, i2
    assert np.allclose(model.sparse["w"].toarray()[1], [1 / 16, 0, 1 / 16])


def test_userknn_by_hand():
    x = sp.csr_matrix(np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 1, 1]], np.float32))
    model = UserKNN(3, 4, topk=1, shrink=0.0)
    model.fit_matrix(x)
    # cosine: s(0,1) = 2/sqrt(6), s(1,2) = 1/sqrt(6), s(0,2) = 0; each user keeps its best:
    # 0 keeps 1, 1 keeps 0, 2 keeps 1; user u is scored by the users whose neighbour it is
    s01, s12 = 2 / np.sqrt(6), 1 / np.sqrt(6)
    expected = [[s01, s01, s01, 0], [s01, s01, s12, s12], [0, 0, 0, 0]]
    got = model.score(torch.arange(3), torch.zeros(3, 4)).numpy()
    assert np.allclose(got, expected, atol=1e-6)


def test_slim_by_hand():
    """Items 0 and 1 are the same column, item 2 is orthogonal to both. Each of 0, 1 is
    explained by the other alone: w = (c/n - alpha l1) / (c/n + alpha (1 - l1)) with
    c = 2 users, n = 4 users, alpha = .2, l1_ratio = .5: (.5 - .1) / (.5 + .1) = 2/3."""
    x = sp.csr_matrix(np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1], [0, 0, 0]], np.float32))
    model = SLIM(4, 3, alpha=0.2, l1_ratio=0.5, topk=10, n_jobs=1, max_iter=1000, tol=1e-10)
    model.fit_matrix(x)
    assert np.allclose(model.sparse["w"].toarray(), [[0, 2 / 3, 0], [2 / 3, 0, 0], [0, 0, 0]])
    limited = SLIM(4, 3, alpha=0.2, l1_ratio=0.5, topk=1, n_jobs=2)
    limited.fit_matrix(x)  # two workers give the same columns
    assert np.allclose(limited.sparse["w"].toarray(), model.sparse["w"].toarray(), atol=1e-4)


def test_slim_never_lets_an_item_explain_itself_nor_depends_on_the_core_count():
    """Each column is its own fit (the released code: no warm start). A warm start carried
    item j-1's coefficient for j into j's fit, where scikit-learn never updates j's zeroed
    column: W_jj > 0, and W changed with the chunks the items are split in (the core count)."""
    import joblib

    x = sp.csr_matrix((np.random.default_rng(3).random((120, 30)) < 0.25).astype(np.float32))
    fits = []
    with joblib.parallel_backend("threading"):
        for jobs in (1, 3):
            model = SLIM(120, 30, alpha=1e-3, l1_ratio=0.1, topk=100, n_jobs=jobs, seed=5)
            model.fit_matrix(x)
            fits.append(model.sparse["w"].toarray())
    assert np.all(np.diag(fits[0]) == 0) and (fits[0] > 0).sum() > 100
    assert np.array_equal(fits[0], fits[1])


def test_userknn_shares_itemknn_similarity():
    """UserKNN's neighbours are ItemKNN's on the transposed matrix (one similarity code)."""
    rng = np.random.default_rng(0)
    x = sp.csr_matrix((rng.random((30, 12)) < 0.3).astype(np.float32))
    users = UserKNN(30, 12, topk=5, shrink=3.0)
    users.fit_matrix(x)
    items = ItemKNN(12, 30, topk=5, shrink=3.0)  # items of x.T are the users of x
    items.fit_matrix(x.T.tocsr())
    w = users.sparse["w"].toarray()
    for v in range(30):
        nbrs = {int(i): float(s) for i, s in zip(items.nbr_idx[v], items.nbr_val[v], strict=True)}
        assert {u: pytest.approx(s) for u, s in nbrs.items() if s > 0} == {
            u: w[u, v] for u in np.flatnonzero(w[:, v])
        }


class Blocks:
    """Users of group g pick 6 of the 10 items of block g; groups differ in size, so
    popularity favours one block and only the user's own history tells its block."""

    def load(self) -> Interactions:
        rng = np.random.default_rng(0)
        group = rng.choice(4, 300, p=[0.4, 0.3, 0.2, 0.1])
        rows = np.repeat(np.arange(300), 6)
        cols = np.concatenate([rng.choice(10, 6, replace=False) + 10 * g for g in group])
        return Interactions.from_codes(rows, cols, np.arange(300), np.arange(40))


@pytest.mark.parametrize("cls", [RP3beta, UserKNN, SLIM])
def test_planted_blocks_beat_popularity(cls, tmp_path):
    dm = RecDataModule(source=Blocks(), split={"method": "user_holdout", "test_fraction": 0.3})
    dm.setup()
    results = {}
    for model in (TopPop(dm.n_users, dm.n_items, ks=(5,)), cls(dm.n_users, dm.n_items, ks=(5,))):
        trainer = quiet_trainer(max_epochs=1, limit_train_batches=0)
        trainer.fit(model, datamodule=dm)
        results[type(model).__name__] = trainer.test(model, datamodule=dm, verbose=False)[0]
        path = tmp_path / f"{type(model).__name__}.ckpt"
        trainer.save_checkpoint(path)
        again = type(model).load_from_checkpoint(path, weights_only=True)
        h = torch.from_numpy(dm.train_matrix[:7].toarray())
        assert torch.allclose(again.score(torch.arange(7), h), model.score(torch.arange(7), h))
    name = cls.__name__
    assert results[name]["test/ndcg@5"] > results["TopPop"]["test/ndcg@5"] + 0.3, results


GRIDS = {
    "rp3beta": "{topk:[2,5],beta:[0.0,0.5]}",
    "userknn": "{topk:[2,5],shrink:[0,10]}",
    "slim": "{alpha:[0.001,0.01],l1_ratio:[0.01,0.1]}",
}


@pytest.mark.parametrize("model", list(GRIDS))
def test_grid_train_eval_recommend_through_the_entry_points(model, tiny, tmp_path):
    """A grid chosen on validation, the refit, advrec-eval's same numbers again and
    advrec-recommend, with the fitted sparse state read back from the checkpoint."""
    root, _ = tiny
    grid = GRIDS[model]
    run_cli(
        "train",
        *data_args(root),
        f"model={model}",
        f"model.search={grid}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert len(m["selection"]) == 4 and m["refit"] == "train+validation"
    run_cli("eval", f"ckpt_path={m['checkpoint']}", f"hydra.run.dir={tmp_path / 'e'}", cwd=tmp_path)
    again = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert again["test/ndcg@10"] == pytest.approx(m["test/ndcg@10"], abs=1e-7)
    run_recommend(m["checkpoint"], tmp_path / "recs.csv", tmp_path, k=3)
    recs = pd.read_csv(tmp_path / "recs.csv")
    assert recs.groupby("user_id").size().eq(3).all()


def test_slim_n_jobs_minus_one_splits_the_items_over_every_cpu(monkeypatch):
    """n_jobs=-1 means every CPU: one chunk of items per worker, not a single chunk."""
    import joblib

    import advrec.models.slim as slim

    chunks = []
    real = slim._fit_columns

    def spy(x, items, h):
        chunks.append(len(items))
        return real(x, items, h)

    monkeypatch.setattr(slim, "_fit_columns", spy)
    x = sp.csr_matrix((np.random.default_rng(0).random((20, 12)) < 0.3).astype(np.float32))
    with joblib.parallel_backend("threading"):
        model = SLIM(20, 12, n_jobs=-1)
        model.fit_matrix(x)
        assert len(chunks) == min(12, joblib.effective_n_jobs(-1)) and sum(chunks) == 12
