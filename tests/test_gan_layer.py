"""The GAN layer: what a new GAN recommender is written on, trained the way users train it."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from advrec.data.batches import Phase
from advrec.models.gan import GANRecommender
from advrec.models.nets import mlp
from tests.helpers import REPO, quiet_trainer, run_cli, run_recommend, synthetic_dm

SRC = REPO / "src" / "advrec"


def docs_skeleton() -> str:
    """The python block after the `<!-- gan-skeleton -->` marker of docs/adding-a-model.md."""
    text = (REPO / "docs" / "adding-a-model.md").read_text()
    match = re.search(r"<!-- gan-skeleton -->\n```python\n(.*?)```", text, re.S)
    assert match, "docs/adding-a-model.md lost its GAN skeleton"
    return match.group(1)


def test_the_docs_skeleton_trains_evaluates_and_recommends(tmp_path):
    code = docs_skeleton()
    assert len(code.splitlines()) <= 100
    pkg, conf = tmp_path / "pkg", tmp_path / "my_conf" / "model"
    pkg.mkdir()
    conf.mkdir(parents=True)
    (pkg / "mygan.py").write_text(code)
    (conf / "mygan.yaml").write_text("_target_: mygan.VectorGAN\nhidden: 16\nbatch_size: 16\n")
    env = {"PYTHONPATH": str(pkg)}
    common = [f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]", "allow_targets=[mygan.]"]
    run_cli(
        "train",
        *common,
        "model=mygan",
        "data=synthetic",
        "trainer.max_epochs=3",
        "logger=csv",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        env=env,
    )
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["model"] == "VectorGAN" and np.isfinite(metrics["test/ndcg@10"])
    log = pd.read_csv(tmp_path / "run" / "csv" / "metrics.csv")
    per_epoch = log.dropna(subset=["train/d_loss"])
    assert len(per_epoch) == 3  # logged once per epoch
    assert per_epoch[["train/g_loss", "train/D_real"]].notna().all().all()
    run_recommend(metrics["checkpoint"], tmp_path / "recs.csv", tmp_path, *common, k=5, env=env)
    recs = pd.read_csv(tmp_path / "recs.csv")
    assert recs.groupby("user_id").size().eq(5).all()


class Tiny(GANRecommender):
    """A minimal GAN whose D learns nothing from batches without positives."""

    def __init__(self, n_users, n_items):
        super().__init__(n_users, n_items)
        self.save_hyperparameters()
        self.hparams.update(lr_g=0.1, lr_d=0.1)
        self.generator = mlp([n_items, 4, n_items])
        self.discriminator = mlp([n_items, 4, 1])
        self.d_calls = 0

    def phases(self):
        return (Phase("D", 8, 1), Phase("G", 16, 2))

    def d_loss(self, batch):
        self.d_calls += 1
        if self.d_calls % 2:
            return None  # nothing to learn: no update, nothing tracked
        return self.discriminator(batch["x"]).pow(2).mean(), {"n": torch.tensor(1.0)}

    def g_loss(self, batch):
        return self.discriminator(self.generator(batch["x"])).mean(), {}

    def score(self, users, history):
        return self.generator(history)


def test_phases_step_their_own_network_and_epoch_means_are_weighted():
    dm = synthetic_dm(40, 20, 300, seed=2)
    model = Tiny(dm.n_users, dm.n_items)
    d0 = [p.detach().clone() for p in model.discriminator.parameters()]
    seen = []
    original = model.track
    model.track = lambda w, values: seen.append((w, sorted(values))) or original(w, values)
    quiet_trainer(max_epochs=1, limit_val_batches=0).fit(model, datamodule=dm)
    n_d = -(-len(dm.train_rows()) // 8)
    assert model.d_calls == n_d
    # every other D batch returned None: only the others were stepped and tracked
    assert [s for s in seen if "d_loss" in s[1]] == [(8, ["d_loss", "n"])] * (n_d // 2)
    assert sum("g_loss" in s[1] for s in seen) == 2 * -(-len(dm.train_rows()) // 16)
    assert any(
        not torch.equal(a, b) for a, b in zip(d0, model.discriminator.parameters(), strict=True)
    )


def test_models_reach_the_data_only_through_the_base_class():
    """The one-way handshake: models declare a plan and receive FitData; only the base
    class reads the Trainer's DataModule, and no model imports the DataModule module."""
    for path in sorted((SRC / "models").glob("*.py")):
        text = path.read_text()
        assert "advrec.data.datamodule" not in text, path.name
        if path.name != "base.py":
            assert "trainer.datamodule" not in text, path.name
            assert ".schedule" not in text, path.name


def test_gan_files_hold_their_method_not_machinery():
    for name in ("cfgan.py", "irgan.py", "easegan.py", "ganmf.py", "gar.py"):
        text = Path(SRC / "models" / name).read_text()
        for machinery in ("toggle_optimizer", "manual_backward", "self.log(", "_PHASE"):
            assert machinery not in text, (name, machinery)
