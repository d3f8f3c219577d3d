"""Network pieces shared by the neural models."""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU, "none": nn.Identity}


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


def positive_pairs(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(row position in batch, item) of every positive in a dense batch, row-major order."""
    r, i = x.nonzero(as_tuple=True)
    return r, i


def sample_unobserved(x: torch.Tensor, rows: torch.Tensor, k: int) -> torch.Tensor:
    """k uniform draws (with replacement) among the unobserved items of x[rows]: (len(rows), k).

    Drawn per batch row once (multinomial over 1 - x), then handed to that row's pairs.
    """
    weights = (x == 0).to(torch.float32)
    per_row = torch.bincount(rows, minlength=len(x)).max().item() * k if len(rows) else 0
    draws = torch.multinomial(weights, max(per_row, 1), replacement=True)  # (B, per_row)
    cols = rank_within_rows(rows, len(x))[:, None] * k + torch.arange(k, device=x.device)
    return draws[rows[:, None], cols]


def rank_within_rows(rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    """For sorted row ids, the position of each entry within its row (0, 1, ...)."""
    order = torch.arange(len(rows), device=rows.device)
    first = torch.full((n_rows,), len(rows), dtype=torch.long, device=rows.device)
    first.scatter_reduce_(0, rows, order, reduce="amin", include_self=True)
    return order - first[rows]
