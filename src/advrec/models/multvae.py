"""Mult-VAE (Liang et al., WWW 2018): a variational autoencoder with a multinomial likelihood
and KL annealing; the generative, non-adversarial baseline."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from advrec.models.base import Recommender
from advrec.models.nets import mlp


class MultVAE(Recommender):
    """Encoder [n_items -> hidden -> 2 * latent], decoder [latent -> hidden -> n_items], tanh;
    input L2-normalised with dropout; beta grows linearly to `beta_max` over
    `anneal_steps` updates."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        hidden: tuple = (600,),
        latent: int = 200,
        dropout: float = 0.5,
        beta_max: float = 0.2,
        anneal_steps: int = 200_000,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        batch_size: int = 500,
        ks: tuple = (5, 10, 20),
    ):
        super().__init__(n_users, n_items, ks)
        self.save_hyperparameters()
        self.encoder = mlp([n_items, *hidden, 2 * latent], "tanh", "none")
        self.decoder = mlp([latent, *reversed(hidden), n_items], "tanh", "none")
        self.drop = nn.Dropout(dropout)

    @property
    def schedule(self) -> list:
        return [("train", self.hparams.batch_size, 1)]

    def configure_optimizers(self):
        h = self.hparams
        return torch.optim.Adam(self.parameters(), lr=h.lr, weight_decay=h.weight_decay)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(self.drop(F.normalize(x, dim=1)))
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        x = batch["x"]
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        nll = -(F.log_softmax(self.decoder(z), dim=1) * x).sum(1).mean()
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)).mean()
        beta = min(self.hparams.beta_max, self.global_step / self.hparams.anneal_steps)
        self.log_dict(
            {"train/nll": nll.detach(), "train/kl": kl.detach()},
            on_step=False,
            on_epoch=True,
            batch_size=len(x),
        )
        return nll + beta * kl

    def score(self, users: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        mu, _ = self.encode(history)  # eval mode: no dropout, the posterior mean
        return self.decoder(mu)
