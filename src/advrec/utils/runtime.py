"""Where this job runs, as Hydra says: the one home of every `HydraConfig` lookup (in a
multirun? a trial of advrec's search? which config groups were chosen?). Outside a Hydra app
(tests, the Python API, a notebook) each answers as for a single plain run."""

from __future__ import annotations

from typing import Any


def hydra_runtime() -> Any | None:
    """Hydra's runtime config of this job (`HydraConfig.get()`), or None outside a Hydra
    app."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def choices() -> dict:
    """The config groups this job composed (experiment, model, data, hparams_search, ...)."""
    hc = hydra_runtime()
    return dict(hc.runtime.choices) if hc is not None else {}


def in_multirun() -> bool:
    """Whether this job is one of a multirun's (`-m`, a benchmark, a search)."""
    from hydra.types import RunMode

    hc = hydra_runtime()
    return hc is not None and hc.mode == RunMode.MULTIRUN


def in_search() -> bool:
    """Whether this job is a trial of advrec's Optuna sweeper."""
    return in_multirun() and "advrec_optuna" in str(hydra_runtime().sweeper.get("_target_", ""))


def verbose() -> bool:
    """Whether Hydra's `hydra.verbose` asks for full tracebacks and debug logs."""
    hc = hydra_runtime()
    return hc is not None and bool(hc.verbose)
