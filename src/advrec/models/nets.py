"""Network pieces shared by the neural models."""

from __future__ import annotations

import torch
from torch import nn

from advrec.errors import AdvrecError

ACTIVATIONS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU, "none": nn.Identity}
OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}


def make_optimizer(name: str, params, lr: float, **kw) -> torch.optim.Optimizer:
    """`model.optimizer` (adam or sgd) over `params`."""
    if name not in OPTIMIZERS:
        raise AdvrecError(f"model.optimizer={name!r}: choose one of {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[name](params, lr=lr, **kw)


def mlp(sizes: list[int], hidden_act: str = "sigmoid", out_act: str = "none") -> nn.Sequential:
    """Linear layers through `sizes` with `hidden_act` between them and `out_act` at the end.

    Weights are Glorot-uniform and biases U(-0.01, 0.01), as in the CFGAN reference code.
    """
    for name in (hidden_act, out_act):
        if name not in ACTIVATIONS:
            raise ValueError(f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        lin = nn.Linear(a, b)
        nn.init.xavier_uniform_(lin.weight)
        nn.init.uniform_(lin.bias, -0.01, 0.01)
        last = i == len(sizes) - 2
        layers += [lin, ACTIVATIONS[out_act if last else hidden_act]()]
    return nn.Sequential(*layers)


def l2(module: nn.Module) -> torch.Tensor:
    """sum(w^2) / 2 over every parameter (TensorFlow's l2_loss, as the papers use)."""
    return sum(p.pow(2).sum() for p in module.parameters()) / 2


class MF(nn.Module):
    """Biased matrix factorisation: score(u, i) = <p_u, q_i> + b_i (BPR, IRGAN's G and D)."""

    def __init__(self, n_users: int, n_items: int, dim: int, init: float = 0.05):
        super().__init__()
        self.user = nn.Parameter(torch.empty(n_users, dim).uniform_(-init, init))
        self.item = nn.Parameter(torch.empty(n_items, dim).uniform_(-init, init))
        self.bias = nn.Parameter(torch.zeros(n_items))

    def forward(self, users: torch.Tensor) -> torch.Tensor:
        """Scores of every item for `users`: (B, n_items)."""
        return self.user[users] @ self.item.T + self.bias

    def pair(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores of (users[k], items[k, ...]) pairs; `items` may have extra trailing dims."""
        u = self.user[users].view(*users.shape, *([1] * (items.dim() - users.dim())), -1)
        return (u * self.item[items]).sum(-1) + self.bias[items]

    def l2(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """sum of squares / 2 of the rows a batch touched (TensorFlow's l2_loss)."""
        return (
            self.user[users].pow(2).sum()
            + self.item[items].pow(2).sum()
            + self.bias[items].pow(2).sum()
        ) / 2
