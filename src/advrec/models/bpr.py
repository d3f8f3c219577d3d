"""BPR-MF (Rendle et al. 2009) with uniform or dynamic negative sampling (DNS, Zhang et al.
2013: draw `dns_k` unobserved candidates, keep the one the model scores highest).

Each epoch visits every training positive once (batches of users, all their positives).
Its checkpoint initialises IRGAN's generator (same `MF` module, same `dim`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from advrec.models.base import Recommender
from advrec.models.nets import MF, make_optimizer
from advrec.models.samplers import positive_pairs, sample_unobserved


class BPR(Recommender):
    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int = 64,
        dns_k: int = 1,
        reg: float = 1e-4,
        lr: float = 1e-3,
        optimizer: str = "adam",
        init: float = 0.05,
        batch_size: int = 64,
        ks: tuple = (5, 10, 20),
    ):
        super().__init__(n_users, n_items, ks)
        self.save_hyperparameters()
        self.mf = MF(n_users, n_items, dim, init)

    def configure_optimizers(self):
        return make_optimizer(self.hparams.optimizer, self.mf.parameters(), self.hparams.lr)

    def negatives(self, users: torch.Tensor, x: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        """One negative per positive pair (batch row `at`): uniform (dns_k=1) or the hardest
        of dns_k."""
        cand = sample_unobserved(x, at, self.hparams.dns_k)  # (P, k)
        if cand.shape[1] == 1:
            return cand[:, 0]
        with torch.no_grad():
            scores = self.mf.pair(users[at], cand)
        return cand.gather(1, scores.argmax(1, keepdim=True))[:, 0]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        users, x = batch["ids"], batch["x"]
        at, pos = positive_pairs(x)
        if len(at) == 0:
            return None
        neg = self.negatives(users, x, at)
        u = users[at]
        diff = self.mf.pair(u, pos) - self.mf.pair(u, neg)
        loss = -F.logsigmoid(diff).mean()
        reg = self.hparams.reg * (self.mf.l2(u, pos) + self.mf.l2(u, neg)) / len(at)
        self.log("train/loss", loss.detach(), on_step=False, on_epoch=True, batch_size=len(u))
        return loss + reg

    def score(self, users: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        return self.mf(users)
