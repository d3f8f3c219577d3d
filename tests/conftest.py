"""Shared fixtures: no network, no W&B account, no real data unless ADVREC_DATA_DIR has it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("ADVREC_DATA_DIR", REPO / "data"))


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("WANDB_MODE", os.environ.get("WANDB_MODE", "disabled"))
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(base / "wandb"))
    monkeypatch.setenv("ADVREC_CACHE_DIR", str(base / "cache"))


def needs_data(*parts: str):
    """Skip (with the reason shown) when a licensed dataset is not under ADVREC_DATA_DIR."""
    path = DATA_DIR.joinpath(*parts)
    return pytest.mark.skipif(
        not path.exists(), reason=f"real data not found: {path} (set ADVREC_DATA_DIR)"
    )


def run_cli(
    module: str, *overrides: str, cwd: Path, env: dict | None = None, check=True, timeout=600
):
    """Run an entry point (python -m advrec.<module>) the way a user does."""
    full_env = {**os.environ, **(env or {}), "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", f"advrec.{module}", *overrides],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


def synthetic_dm(n_users: int, n_items: int, n_interactions: int, seed: int = 0, **kw):
    """A set-up DataModule over seeded synthetic data with a 20 % random test holdout."""
    from advrec.data.datamodule import RecDataModule
    from advrec.data.sources import Synthetic

    dm = RecDataModule(
        source=Synthetic(
            n_users=n_users, n_items=n_items, n_interactions=n_interactions, seed=seed
        ),
        split={"method": "random_holdout", "test_fraction": 0.2},
        seed=0,
        **kw,
    )
    dm.setup()
    return dm


def quiet_trainer(**kw):
    """A Lightning Trainer without loggers, checkpoints, bars or sanity checks (overridable)."""
    from lightning import Trainer

    base = dict(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
    )
    return Trainer(**{**base, **kw})
