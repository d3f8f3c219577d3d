"""The SLURM launcher config composes into parameters submitit accepts (no cluster needed)."""

import os

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from advrec.config import CONF_DIR
from tests.helpers import run_cli

submitit = pytest.importorskip("submitit", reason="pip install -e '.[slurm]'")
OVERRIDES = [
    "trainer=ddp",
    "trainer.devices=4",
    "trainer.num_nodes=2",
    "hydra/launcher=slurm",
    "hydra.launcher.partition=gpu",
    "hydra.launcher.account=proj",
]


def test_cfg_hydra_prints_the_submitit_launcher(tmp_path):
    out = run_cli("train", *OVERRIDES, "--cfg", "hydra", cwd=tmp_path).stdout
    hydra_cfg = OmegaConf.create(out)
    launcher = hydra_cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.account == "proj"
    sweep = OmegaConf.to_container(hydra_cfg.hydra.sweep, resolve=False)
    assert "SLURM_JOB_ID" in sweep["subdir"]  # a requeued job keeps its dir, arrays never clash


def test_launcher_parameters_make_a_valid_sbatch_script(tmp_path, monkeypatch):
    fake_srun = tmp_path / "bin" / "srun"  # submitit only checks that srun exists
    fake_srun.parent.mkdir()
    fake_srun.write_text("#!/bin/sh\n")
    fake_srun.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_srun.parent}:{os.environ['PATH']}")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=OVERRIDES, return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    # resolve against the whole config: tasks and GPUs per node follow trainer.devices
    for key in ("nodes", "tasks_per_node", "gpus_per_node"):
        launcher[key] = OmegaConf.select(cfg, f"hydra.launcher.{key}")
    assert launcher["tasks_per_node"] == launcher["gpus_per_node"] == 4
    assert launcher["nodes"] == 2
    # the plugin's own mapping onto submitit (init keys vs. queue parameters)
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    launcher.pop("_target_")
    launcher.pop("submitit_folder")
    executor = submitit.AutoExecutor(
        folder=tmp_path, cluster="slurm", slurm_max_num_timeout=launcher.pop("max_num_timeout")
    )
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in launcher.items()})
    script = executor._executor._make_submission_file_text("python -m advrec.train", "uid")
    for line in (
        "--nodes=2",
        "--ntasks-per-node=4",
        "--gpus-per-node=4",
        "--partition=gpu",
        "--account=proj",
        "--signal=USR2@120",
    ):
        assert line in script, line
