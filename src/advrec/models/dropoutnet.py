"""DropoutNet (Volkovs, Yu & Poutanen, NeurIPS 2017) on iALS embeddings, for user cold start.

Released code followed: layer6ai-labs/DropoutNet, `torch/model.py` and `torch/main.py`. A
warm model's user and item embeddings U, V (standardised per column) enter two towers, the
user's beside their content (the encoded features: the friends' multi-hot on Last.fm); the
towers are trained to reproduce the warm model's scores U V^T on each user's `n_top` highest
scored items and `n_random` random items (mean squared error). Input dropout is the method: for
a share `dropout` of the pairs the user's preference input is zeroed, so the user tower learns
to answer from content alone, which is all a cold user has: a user it never trained on (cold,
or new in advrec-recommend) is scored with a zero preference input.

Towers: Linear + BatchNorm + tanh blocks (`hidden`), then a linear layer to `rank`; SGD with
momentum .9 (the released defaults: hidden [800, 400], rank 200, dropout .5, lr .005).

Where advrec departs: the warm embeddings are iALS's (`ials_embeddings`, fitted at the start of
the fit on the training matrix) where the paper uses WMF's; items have no content, so only the
user's preference input is dropped (the released code also drops the item's, for cold items);
a training step is a batch of warm users with their targets, the released one 1,000 users cut
into batches of 100 pairs, and the user tower runs once per user with and once without its
preference input (batch normalisation sees each variant once, not once per pair); no
learning-rate decay.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from advrec.data.batches import FitData
from advrec.errors import AdvrecError
from advrec.models.base import Recommender, require_features
from advrec.models.ials import warm_embeddings


def tower(sizes: list[int], rank: int) -> nn.Sequential:
    """Linear + BatchNorm + tanh through `sizes`, then a linear layer to `rank`."""
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), nn.BatchNorm1d(b, momentum=0.01, eps=1e-3), nn.Tanh()]
    return nn.Sequential(*layers, nn.Linear(sizes[-1], rank))


def standardise(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Columns centred and scaled by the mean and deviation over `rows`."""
    mean, std = x[rows].mean(0), x[rows].std(0).clamp(min=1e-8)
    return (x - mean) / std


class DropoutNet(Recommender):
    """See the module docstring."""

    uses_features = True
    data_facts = ("n_features",)
    limits = {
        "dropout": ("a number in [0, 1]", lambda v: 0 <= v <= 1),
        "dim": ("a whole number >= 1", lambda v: v >= 1 and v == int(v)),
        "rank": ("a whole number >= 1", lambda v: v >= 1 and v == int(v)),
        "n_top": ("a whole number >= 0", lambda v: v >= 0 and v == int(v)),
        "n_random": ("a whole number >= 0", lambda v: v >= 0 and v == int(v)),
        "lr": ("a number > 0", lambda v: v > 0),
        "warm_reg": ("a number > 0", lambda v: v > 0),
        "warm_sweeps": ("a whole number >= 1", lambda v: v >= 1 and v == int(v)),
    }

    def __init__(
        self,
        n_users: int,
        n_items: int,
        n_features: int = 0,
        dim: int = 64,
        hidden: tuple = (800, 400),
        rank: int = 200,
        dropout: float = 0.5,
        n_top: int = 100,
        n_random: int = 100,
        lr: float = 0.005,
        momentum: float = 0.9,
        batch_size: int = 64,
        warm_reg: float = 0.003,
        warm_sweeps: int = 8,
        seed: int = 0,
        ks: tuple = (5, 10, 20),
    ):
        super().__init__(n_users, n_items, ks)
        self.save_hyperparameters()
        require_features(n_features, "DropoutNet", "scores a cold user from their features")
        if n_top + n_random == 0:
            raise AdvrecError("model.n_top + model.n_random must be at least 1 (the targets)")
        self.check_limits()
        self.user_tower = tower([dim + n_features, *hidden], rank)
        self.item_tower = tower([dim, *hidden], rank)
        self.register_buffer("u_pref", torch.zeros(n_users, dim))  # standardised warm U
        self.register_buffer("v_pref", torch.zeros(n_items, dim))
        self.register_buffer("u_raw", torch.zeros(n_users, dim))  # the targets' U and V
        self.register_buffer("v_raw", torch.zeros(n_items, dim))
        self.register_buffer("warm", torch.zeros(n_users, dtype=torch.bool))

    def configure_optimizers(self):
        h = self.hparams
        return torch.optim.SGD(self.parameters(), lr=h.lr, momentum=h.momentum)

    def prepare_fit(self, data: FitData) -> None:
        users, items, warm = warm_embeddings(data.train, self.hparams)
        trained = torch.from_numpy(data.train.getnnz(axis=0) > 0)
        self.u_raw.copy_(users)
        self.v_raw.copy_(items)
        self.u_pref.copy_(standardise(users, warm) * warm[:, None])
        self.v_pref.copy_(standardise(items, trained))
        self.warm.copy_(warm)

    def embed_users(self, pref: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return self.user_tower(torch.cat([pref, features.float()], 1))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        h, keep = self.hparams, self.warm[batch["ids"]]  # users without items have no targets
        users, features = batch["ids"][keep], batch["features"][keep]
        n = len(users)
        if n == 0:
            return None
        target = self.u_raw[users] @ self.v_raw.T  # (B, items): the warm model's scores
        top = target.topk(min(h.n_top, self.n_items), dim=1).indices
        rand = torch.randint(self.n_items, (n, h.n_random), device=users.device)
        items = torch.cat([top, rand], 1)  # (B, T)
        at = torch.arange(n, device=users.device).repeat_interleave(items.shape[1])
        items = items.flatten()
        # a pair's user input is the user's row with or without its preference part (input
        # dropout), so the tower runs once per user and variant, not once per pair
        pref = self.u_pref[users]
        pref = torch.cat([pref, torch.zeros_like(pref)])
        both = self.embed_users(pref, features.repeat(2, 1))
        dropped = (torch.rand(len(at), device=pref.device) < h.dropout).long()
        u = both[at + n * dropped]
        v = self.item_tower(self.v_pref[items])
        loss = F.mse_loss((u * v).sum(1), target[at, items])
        self.log("train/loss", loss.detach(), on_step=False, on_epoch=True, batch_size=len(at))
        return loss

    def score_batch(self, batch: dict) -> torch.Tensor:
        users = batch["users"]
        if self.scoring_new_users:
            pref = self.u_pref.new_zeros(len(users), self.u_pref.shape[1])
        else:
            pref = self.u_pref[users] * self.warm[users, None]  # a cold user: zero input
        return self.embed_users(pref, batch["features"]) @ self.item_tower(self.v_pref).T
