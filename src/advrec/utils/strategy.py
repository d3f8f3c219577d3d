"""Lightning's DDP for every advrec model, including those without trainable parameters.

PyTorch's `DistributedDataParallel` refuses a module with no parameter that requires a
gradient ("DDP is not needed ..."), and Lightning wraps every fitted module in it. advrec's
closed-form models (EASE^R, SLIM, ItemKNN, TopPop, ...) and iALS (exact solves into buffers)
have none, so under `trainer=ddp` they died at `trainer.fit`. `ModelAwareDDP` is Lightning's
`DDPStrategy` that leaves such a module unwrapped: each process fits it on the same data
(closed forms) or keeps its ranks in step itself (iALS), and evaluation shards the users as
for every other model. Modules with trainable parameters are wrapped as before.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.strategies import DDPStrategy, StrategyRegistry


def trainable(module) -> bool:
    """Whether `module` has a parameter that requires a gradient (what DDP synchronises)."""
    return any(p.requires_grad for p in module.parameters())


class ModelAwareDDP(DDPStrategy):
    """`DDPStrategy` that wraps the module in DistributedDataParallel only when it has
    trainable parameters (there is nothing to all-reduce otherwise)."""

    def configure_ddp(self) -> None:
        if trainable(self.model):
            super().configure_ddp()


def resolve_strategy(strategy: Any) -> Any:
    """A Lightning DDP strategy name (`ddp`, `ddp_fork_find_unused_parameters_true`, ...) as
    the same settings of `ModelAwareDDP`; any other value unchanged."""
    if not isinstance(strategy, str) or strategy not in StrategyRegistry:
        return strategy
    entry = StrategyRegistry[strategy]
    if entry["strategy"] is not DDPStrategy:
        return strategy
    return ModelAwareDDP(**entry["init_params"])
