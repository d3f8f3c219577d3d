"""Mult-VAE (Liang et al., WWW 2018): a variational autoencoder with a multinomial likelihood
and KL annealing; the generative, non-adversarial baseline."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from advrec.errors import AdvrecError
from advrec.models.base import Recommender
from advrec.models.nets import make_optimizer, mlp


class MultVAE(Recommender):
    """Encoder [n_items -> hidden -> 2 * latent], decoder [latent -> hidden -> n_items], tanh;
    input L2-normalised with dropout.

    KL annealing: beta grows linearly from 0 to `beta_max` over `anneal_steps` updates and
    stays there. Liang et al. annealed over 200,000 updates on ML-20M; ML-100K has a few
    updates per epoch, so a fixed count would never get far. `anneal_steps=null` (default)
    anneals over `anneal_share` of the run's planned updates (max_epochs x batches per
    epoch), so beta reaches `beta_max` in every run; the resolved count is stored in the
    hyper-parameters so a refit anneals exactly like the run it repeats. `train/beta` is
    logged every epoch.
    """

    reads_history = True

    def __init__(
        self,
        n_users: int,
        n_items: int,
        hidden: tuple = (600,),
        latent: int = 200,
        dropout: float = 0.5,
        beta_max: float = 0.2,
        anneal_steps: int | None = None,
        anneal_share: float = 0.2,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        batch_size: int = 500,
        ks: tuple = (5, 10, 20),
    ):
        super().__init__(n_users, n_items, ks)
        if anneal_steps is not None and anneal_steps < 0:
            raise AdvrecError(f"model.anneal_steps={anneal_steps} must be >= 0 (or null)")
        if not 0.0 < anneal_share <= 1.0:
            raise AdvrecError(f"model.anneal_share={anneal_share} must lie in (0, 1]")
        self.save_hyperparameters()
        self.encoder = mlp([n_items, *hidden, 2 * latent], "tanh", "none")
        self.decoder = mlp([latent, *reversed(hidden), n_items], "tanh", "none")
        self.drop = nn.Dropout(dropout)

    def configure_optimizers(self):
        h = self.hparams
        return make_optimizer("adam", self.parameters(), h.lr, weight_decay=h.weight_decay)

    def on_fit_start(self) -> None:
        super().on_fit_start()  # the shared data handshake (prepare_fit)
        if self.hparams.anneal_steps is None:
            total = self.trainer.estimated_stepping_batches
            if not math.isfinite(total):
                raise AdvrecError(
                    "Mult-VAE anneals over a share of the run, which has no end "
                    "(trainer.max_epochs=-1): set trainer.max_epochs or model.anneal_steps"
                )
            self.hparams.anneal_steps = max(1, math.ceil(self.hparams.anneal_share * total))

    def beta(self) -> float:
        """The KL weight of the current update."""
        h = self.hparams
        if not h.anneal_steps:
            return float(h.beta_max)
        return float(h.beta_max) * min(1.0, self.global_step / h.anneal_steps)

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
        beta = self.beta()
        self.log_dict(
            {"train/nll": nll.detach(), "train/kl": kl.detach(), "train/beta": beta},
            on_step=False,
            on_epoch=True,
            batch_size=len(x),
        )
        return nll + beta * kl

    def score(self, users: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        mu, _ = self.encode(history)  # eval mode: no dropout, the posterior mean
        return self.decoder(mu)
