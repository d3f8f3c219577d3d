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
