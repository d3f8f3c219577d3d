"""Shared fixtures: no network, no W&B account, no real data unless ADVREC_DATA_DIR has it;
the helpers they use are in tests/helpers."""

from __future__ import annotations

import os

import pytest

from tests.helpers import write_tiny


def pytest_configure(config) -> None:
    from advrec.utils.console import NOISE

    for pattern in NOISE:  # the warnings the entry points silence
        config.addinivalue_line("filterwarnings", f"ignore:{pattern}")


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("WANDB_MODE", os.environ.get("WANDB_MODE", "disabled"))
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(base / "wandb"))
    monkeypatch.setenv("ADVREC_CACHE_DIR", str(base / "cache"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A predefined train/test pair with string ids (tests.helpers.write_tiny)."""
    return write_tiny(tmp_path_factory.mktemp("tiny"))
