"""GANMF (Dervishaj & Cremonesi, SAC 2022): a matrix-factorisation generator against an
autoencoder discriminator, as in the released code (edervishaj/GANMF, GANRec/GANMF.py).

A training row is a user (`rows=users`, "user-based") or an item (`rows=items`); G holds an
embedding per row and per column and generates row r's whole vector as p_r Q^T. D is a linear
autoencoder (n_cols -> emb_dim -> n_cols) whose reconstruction error is an energy: low on
real rows, high on generated ones (EBGAN's margin loss). With rec(v) = mean((AE(v) - v)^2)
over the batch's entries and enc the code layer:

    D: rec(x) + max(0, m * rec(x) - rec(G(r))) + reg_d * l2(D)
    G: (1 - recon_coefficient) * rec(G(r)) + recon_coefficient * mean((enc(x) - enc(G(r)))^2)
       + reg_g * l2(G)

the second term of G's loss is the feature matching of a row's real and generated codes. One
epoch = `d_steps` passes of D over all rows, then `g_steps` passes of G, both at `batch_size`
(the released code shuffles the rows once per epoch for both; here each pass is shuffled).
Scores: p_u Q^T (user-based), or q_u P^T with P the items' embeddings (item-based).
"""

from __future__ import annotations

import torch
from torch import nn

from advrec.data.batches import ROWS, Phase
from advrec.errors import AdvrecError
from advrec.models.gan import GANRecommender
from advrec.models.nets import l2


class RowsByColumns(nn.Module):
    """G: an embedding per row (`row`) and per column (`col`), Glorot-uniform, no bias;
    row r's generated vector is row[r] @ col^T."""

    def __init__(self, n_rows: int, n_cols: int, factors: int):
        super().__init__()
        self.row = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_rows, factors)))
        self.col = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_cols, factors)))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.row[ids] @ self.col.T


class Autoencoder(nn.Module):
    """D: linear encoder n -> emb_dim and decoder emb_dim -> n (Glorot weights, zero biases,
    as TensorFlow's dense layers); its score of a batch is the reconstruction error."""

    def __init__(self, n: int, emb_dim: int):
        super().__init__()
        self.encode, self.decode = nn.Linear(n, emb_dim), nn.Linear(emb_dim, n)
        for layer in (self.encode, self.decode):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(code, reconstruction error: the mean squared error over the batch's entries)."""
        code = self.encode(v)
        return code, (self.decode(code) - v).pow(2).mean()


class GANMF(GANRecommender):
    """See the module docstring; hyper-parameter names follow the released `fit` where they
    can (num_factors -> factors, d_lr / g_lr -> lr_d / lr_g, d_reg / g_reg -> reg_d / reg_g)."""

    limits = {
        "factors": ("an integer >= 1", lambda v: v >= 1),
        "emb_dim": ("an integer >= 1", lambda v: v >= 1),
        "m": ("a number >= 0 (the energy margin)", lambda v: v >= 0),
        "recon_coefficient": ("a number in [0, 1]", lambda v: 0 <= v <= 1),
    }

    def __init__(
        self,
        n_users: int,
        n_items: int,
        rows: str = "users",
        factors: int = 10,
        emb_dim: int = 32,
        m: float = 1.0,
        recon_coefficient: float = 1e-2,
        lr_g: float = 1e-4,
        lr_d: float = 1e-4,
        reg_g: float = 0.0,
        reg_d: float = 0.0,
        batch_size: int = 32,
        d_steps: int = 1,
        g_steps: int = 1,
        grad_clip: float | None = None,
        ks: tuple = (5, 10, 20),
    ):
        super().__init__(n_users, n_items, ks)
        if rows not in ROWS:
            raise AdvrecError(f"model.rows={rows!r}: choose one of {ROWS}")
        self.save_hyperparameters()
        self.check_limits()
        self.rows = rows
        n_rows, n_cols = (n_users, n_items) if rows == "users" else (n_items, n_users)
        self.generator = RowsByColumns(n_rows, n_cols, int(factors))
        self.discriminator = Autoencoder(n_cols, int(emb_dim))

    def phases(self) -> tuple[Phase, ...]:
        h = self.hparams
        return (Phase("D", h.batch_size, h.d_steps), Phase("G", h.batch_size, h.g_steps))

    def d_loss(self, batch: dict):
        h, x = self.hparams, batch["x"]
        with torch.no_grad():
            fake = self.generator(batch["ids"]).to(x.dtype)
        _, real_rec = self.discriminator(x)
        _, fake_rec = self.discriminator(fake)
        margin = torch.relu(h.m * real_rec - fake_rec)
        loss = real_rec + margin + h.reg_d * l2(self.discriminator)
        return loss, {"rec_real": real_rec, "rec_fake": fake_rec}

    def g_loss(self, batch: dict):
        h, x = self.hparams, batch["x"]
        fake = self.generator(batch["ids"]).to(x.dtype)
        real_code, _ = self.discriminator(x)
        fake_code, fake_rec = self.discriminator(fake)
        matching = (real_code - fake_code).pow(2).mean()
        c = h.recon_coefficient
        loss = (1 - c) * fake_rec + c * matching + h.reg_g * l2(self.generator)
        return loss, {"feature_matching": matching}

    def score(self, users: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        g = self.generator
        return g(users) if self.rows == "users" else g.col[users] @ g.row.T
