"""The protocols: selection on validation, the refit on train + validation, one test."""

import json
import os

import pytest
import torch
from omegaconf import OmegaConf

from advrec.errors import AdvrecError
from advrec.models.base import Recommender
from advrec.run.build import build_trainer, trainer_factories
from advrec.run.protocol import Protocol
from tests.helpers import data_args, run_cli, synthetic_dm

SMALL = [
    "data=synthetic",
    "data.source.n_users=100",
    "data.source.n_items=50",
    "data.source.n_interactions=1500",
]


class Counter(Recommender):
    """Counts the training interactions it sees per epoch; its validation score rises and
    then falls, so selection picks epoch 2 of 4."""

    def __init__(self, n_users: int, n_items: int, ks=(5, 10)):
        super().__init__(n_users, n_items, ks)
        self.save_hyperparameters()
        self.w = torch.nn.Parameter(torch.zeros(n_items))
        self.seen: dict[int, float] = {}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def training_step(self, batch, batch_idx):
        e = self.current_epoch
        self.seen[e] = self.seen.get(e, 0.0) + float(batch["x"].sum())
        return self.w.sum() * 0.0

    def on_train_epoch_start(self):
        with torch.no_grad():  # good scores at epoch 1 (0-based), noise elsewhere
            pop = torch.from_numpy(self.trainer.datamodule.train_matrix.sum(0).A1).float()
            self.w.copy_(pop if self.current_epoch == 1 else -pop)

    def score(self, users, history):
        return self.w.expand(len(users), -1)


def _cfg(tmp_path, refit="all"):
    return OmegaConf.create(
        {
            "seed": 3,
            "ckpt_path": None,
            "paths": {"output_dir": str(tmp_path)},
            "protocol": {
                "name": "validated",
                "optimistic": False,
                "val_fraction": 0.1,
                "monitor": "val/ndcg@10",
                "patience": 0,
                "refit": refit,
            },
            "trainer": {
                "_target_": "lightning.Trainer",
                "max_epochs": 4,
                "accelerator": "cpu",
                "enable_progress_bar": False,
                "enable_model_summary": False,
                "num_sanity_val_steps": 0,
                "use_distributed_sampler": False,
                "default_root_dir": str(tmp_path),
            },
            "callbacks": {
                "ckpt": {
                    "_target_": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "dirpath": str(tmp_path / "checkpoints"),
                    "monitor": "val/ndcg@10",
                    "mode": "max",
                }
            },
            "logger": {},
        }
    )


@pytest.mark.parametrize("refit", ["all", "closed_form"])
def test_validated_refits_the_chosen_epoch_count_on_train_plus_validation(tmp_path, refit):
    cfg = _cfg(tmp_path, refit)
    protocol = Protocol.from_config(cfg.protocol)
    dm = synthetic_dm(80, 40, 1600, val_fraction=0.1, batch_size=16)
    model = Counter(dm.n_users, dm.n_items)
    trainer = build_trainer(cfg, logger=False, **protocol.trainer_overrides(model, dm))
    make, make_eval = trainer_factories(cfg)
    res = protocol.run(
        model, dm, trainer, seed=cfg.seed, output_dir=cfg.paths.output_dir, make_trainer=make,
        make_eval_trainer=make_eval,
    )  # fmt: skip
    assert res.epochs == 4 and res.selected_epoch == 2  # the epoch-1 weights won
    assert model.seen[0] == dm.train_matrix.nnz < dm.train_full_matrix.nnz
    if refit == "all":
        assert res.refit == "train+validation" and res.model is not model
        assert sorted(res.model.seen) == [0, 1]  # two epochs: the chosen count
        assert res.model.seen[0] == dm.train_full_matrix.nnz  # validation folded in
    else:  # the trained model is tested from its validation-best checkpoint
        assert res.refit is None and res.selected_checkpoint
    assert res.test["test/ndcg@10"] == pytest.approx(res.val["val/ndcg@10"], abs=0.2)


def test_refit_needs_a_validation_split():
    with pytest.raises(AdvrecError, match="val_fraction"):
        Protocol.from_config(
            OmegaConf.create(
                {"name": "x", "optimistic": False, "val_fraction": 0.0, "refit": "all"}
            )
        )
    with pytest.raises(AdvrecError, match="refit"):
        Protocol.from_config(
            OmegaConf.create(
                {"name": "x", "optimistic": False, "val_fraction": 0.1, "refit": "sometimes"}
            )
        )


def test_cold_user_split_trains_the_validation_users_in_the_refit():
    from advrec.data.datamodule import RecDataModule
    from advrec.data.sources import Synthetic

    dm = RecDataModule(
        source=Synthetic(n_users=100, n_items=40, n_interactions=1500, seed=0),
        split={"method": "cold_users", "test_fraction": 0.2},
        val_fraction=0.1,
    )
    dm.setup()
    full = dm.with_validation_in_train()
    assert full.train_matrix is dm.train_full_matrix and full.val_matrix is None
    assert len(full.train_rows()) == len(dm.train_rows()) + 8  # 10 % of the 80 others
    assert len(dm.split.held_out_users()) == 20 + 8 and len(dm.train_rows()) == 72


def test_metrics_json_names_the_selected_epoch_and_the_refit(tiny, tmp_path):  # noqa: F811
    root, _ = tiny
    run_cli(
        "train",
        *data_args(root),
        "model=bpr",
        "model.dim=8",
        "trainer.max_epochs=4",
        "trainer.check_val_every_n_epoch=1",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["refit"] == "train+validation" and 1 <= m["selected_epoch"] <= 4
    assert m["epochs"] == 4 and m["selected_checkpoint"]
    refit_log = (tmp_path / "csv" / "refit" / "metrics.csv").read_text().splitlines()
    epochs = {int(line.split(",")[0]) for line in refit_log[1:] if line}
    assert max(epochs) + 1 == m["selected_epoch"]  # the refit ran the chosen epochs
    state = torch.load(m["checkpoint"], weights_only=True, map_location="cpu")
    assert state["advrec_refit_on"] == "train+validation"


def test_plain_multirun_from_an_empty_folder_lands_where_the_readme_says(tmp_path):
    """`advrec-train -m seed=1,2 ...` with no hydra.* override (it crashed on
    ${hydra:runtime.cwd} in hydra.sweep.dir before Hydra was set)."""
    run_cli("train", "-m", "seed=1,2", "model=pop", "data=synthetic", "logger=csv", cwd=tmp_path)
    sweeps = list((tmp_path / "multirun").iterdir())
    assert len(sweeps) == 1, sweeps
    runs = sorted(p.parent for p in sweeps[0].glob("*/metrics.json"))
    assert [p.name for p in runs] == ["0_local", "1_local"]
    seeds = [json.loads((p / "metrics.json").read_text())["seed"] for p in runs]
    assert seeds == [1, 2]
    assert not (tmp_path / "outputs").exists()  # nothing written elsewhere


def test_closed_form_models_fit_once_whatever_the_epoch_setting(tmp_path):
    """trainer.max_epochs=-1 is Lightning's 'forever'; a closed-form model fits in one pass."""
    run_cli(
        "train",
        "model=ease",
        *SMALL,
        "trainer.max_epochs=-1",
        "logger=csv",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
        timeout=120,
    )
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["epochs"] == 1 and m["refit"] == "train+validation"


def test_test_selected_checks_irgan_after_every_pass_as_released(tmp_path):
    """cf_gan.py evaluates G after each of its G epochs (50 a round), not once a round."""
    run_cli(
        "train",
        "model=irgan",
        *SMALL,
        "data.split.test_fraction=0.2",
        "model.d_epochs=1",
        "model.g_epochs=3",
        "model.batch_size=32",  # 4 batches a pass
        "trainer.max_epochs=2",
        "protocol=test_selected",
        "protocol.check_every=pass",
        "logger=csv",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    log = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()
    header = log[0].split(",")
    col = header.index("val/precision@5")
    checks = [row for row in log[1:] if row.split(",")[col]]
    assert len(checks) == 2 * 4 + 1  # 2 rounds x (1 D + 3 G passes), then the re-validation
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["optimistic"] and m["refit"] is None and m["selected_step"] is not None


def test_eval_refuses_validation_scores_of_a_refit_checkpoint(tiny, tmp_path):  # noqa: F811
    root, _ = tiny
    run_cli("train", *data_args(root), "model=pop", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    m = json.loads((tmp_path / "metrics.json").read_text())
    proc = run_cli(
        "eval",
        f"ckpt_path={m['checkpoint']}",
        "split=val",
        f"hydra.run.dir={tmp_path / 'e'}",
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 2 and "refit on train+validation" in proc.stderr


def test_pretraining_and_irgan_in_one_validated_run(tmp_path):
    """The released two-step IRGAN procedure as one command, both steps on validation."""
    run_cli(
        "train",
        "model=irgan",
        *SMALL,
        "model.d_epochs=1",
        "model.g_epochs=1",
        "trainer.max_epochs=2",
        "pretrain=bpr_dns",
        "pretrain.trainer.max_epochs=3",
        "pretrain.trainer.check_val_every_n_epoch=1",
        "logger=csv",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    m = json.loads((tmp_path / "metrics.json").read_text())
    pre = m["pretrain"]
    assert pre["model"] == "BPR" and pre["refit"] == "train+validation"
    assert 1 <= pre["selected_epoch"] <= 3 and "val/ndcg@10" in pre
    # IRGAN's selection started from the pre-training's selected (train-only) checkpoint;
    # the tested IRGAN is the refit, which started from the refit pre-training
    assert m["hparams"]["init_ckpt"] == str(tmp_path / "pretrain" / "checkpoints" / "final.ckpt")
    assert (tmp_path / "pretrain" / "metrics.json").is_file()
    cfg = (tmp_path / ".hydra" / "config.yaml").read_text()
    assert "pretrain:" in cfg
    # the final checkpoint loads on its own
    proc = run_cli(
        "eval", f"ckpt_path={m['checkpoint']}", f"hydra.run.dir={tmp_path / 'e'}", cwd=tmp_path
    )
    assert proc.returncode == 0


@pytest.mark.parametrize("model", ["bpr", "cfgan"])
def test_the_refit_trains_with_no_other_model_alive(tmp_path, model):
    """advrec-train's refit starts when the selection model, its optimizers' state and the
    reloaded validation-best model are gone: one model's weights at a time (Last.fm-sized
    models held three copies)."""
    import json
    import subprocess
    import sys

    from tests.helpers import REPO

    proc = subprocess.run(
        [sys.executable, "-m", "tests.helpers.refit_probe", f"model={model}", "data=synthetic",
         "trainer.max_epochs=3", "trainer.check_val_every_n_epoch=1", "logger=none",
         f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    selection, refit = json.loads(proc.stdout.strip().splitlines()[-1])
    assert selection == {"models": 1, "optimizers": 0}
    assert refit == {"models": 1, "optimizers": 0}  # the refit model only, before it trains


def test_without_a_test_final_ckpt_holds_the_refit_model(tmp_path):
    """protocol.test=false with a refit: final.ckpt is the model refit on train + validation
    (it was the chosen one, still connected to the trainer by validation)."""
    from advrec.utils.io import read_checkpoint
    from tests.helpers import run_cli

    out = tmp_path / "run"
    run_cli(
        "train", "model=bpr", "data=synthetic", "trainer.max_epochs=2", "protocol.test=false",
        "trainer.check_val_every_n_epoch=1", "logger=none", f"hydra.run.dir={out}",
        cwd=tmp_path, check=True,
    )  # fmt: skip
    assert json.loads((out / "metrics.json").read_text())["refit"] == "train+validation"
    assert read_checkpoint(out / "checkpoints" / "final.ckpt")["advrec_refit_on"] == (
        "train+validation"
    )
