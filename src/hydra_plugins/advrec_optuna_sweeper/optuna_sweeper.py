"""Hydra finds sweepers only in the `hydra_plugins` namespace; the logic is `advrec.sweep`."""

from __future__ import annotations

import sys

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class AdvrecOptunaSweeper(Sweeper):
    """Seeded TPE over a Hydra sweep grammar search space, resumable; see `advrec.sweep`."""

    def __init__(self, **kwargs) -> None:
        from advrec.sweep import OptunaSearch

        self.search = OptunaSearch(**kwargs)

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.search.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> dict:
        from advrec.errors import AdvrecError

        try:
            return self.search.sweep(arguments)
        except AdvrecError as e:  # a user's mistake: one line, no traceback
            print(f"advrec: error: {e}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:  # between trials (a trial cut off says so itself)
            from advrec.utils.console import command

            print(
                "advrec: stopped by Ctrl-C; finished trials are kept; the same command "
                f"resumes the sweep: {command()}",
                file=sys.stderr,
            )
            sys.exit(130)
