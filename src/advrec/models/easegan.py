"""EASE-GAN (advrec's own): an adversarial item-item generator that starts where EASE^R ends.

G maps a user's history x to scores x W with an item-item W whose diagonal is zero, as in
EASE^R (Steck 2019), and W starts at EASE^R's closed-form solution on the training rows.
D is CFGAN's conditional discriminator (`ConditionalGAN`): real [x ; x], fake
[x ; G(x) * mask], with the scheme's masks (ZR: D sees the observed entries; PM/ZP: also a
fresh sample of s_pm % of the unobserved ones each epoch). G's loss is

    mean_u ||x_u - x_u W||^2 + (lam / n_rows) ||W||^2      EASE^R's objective, per row
  + adv_weight * -log D([x ; G(x) * mask])                 the adversary
  + alpha * mean_u sum_{N^ZR} G(x)^2                       CFGAN's ZR penalty (ZR, ZP)

so with `adv_weight=0` (and alpha=0) D never trains and G is EASE^R refined by gradient
descent from its own optimum: the ablation. Which of the two validation prefers is the
finding. Logged each epoch besides the losses: `w_drift` (||W - W_EASE|| / ||W_EASE||),
`topk_popularity` (the mean share of training rows holding an item of the users' unseen
top-`collapse_k`), `topk_coverage` (the share of the catalogue those lists reach) and
`topk_in_condition` (the identity-collapse share; see `ConditionalGAN.diagnostics`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from advrec.data.batches import FitData
from advrec.errors import AdvrecError
from advrec.models.cfgan import ConditionalGAN
from advrec.models.ease import EASESolver


class ItemItem(nn.Module):
    """x -> x W with W's diagonal held at zero (an item never scores itself): the diagonal
    is subtracted from W itself, so its gradient is exactly zero and Adam never moves it."""

    def __init__(self, n: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n, n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        return x @ (w - torch.diag_embed(w.diagonal()))


class EASEGAN(ConditionalGAN):
    """See the module docstring. `lam` is EASE^R's L2 weight (the initial solution's and the
    reconstruction term's); fix it to the tuned EASE^R's of the same data, or let
    `search={lam: [...]}` choose it on validation in every run as EASE^R's grid does: the
    protocol scores each candidate's starting point (`fit_matrix`, before any training step)
    by `select_by` and trains from the best."""

    reads_history = True

    limits = {
        "lam": ("a number > 0 (EASE^R's L2 weight)", lambda v: v > 0),
        "adv_weight": ("a number >= 0", lambda v: v >= 0),
        "alpha": ("a number >= 0", lambda v: v >= 0),
    }

    def __init__(
        self,
        n_users: int,
        n_items: int,
        lam: float = 500.0,
        adv_weight: float = 1.0,
        scheme: str = "ZP",
        s_zr: float = 70.0,
        s_pm: float = 70.0,
        negatives: str = "independent",
        alpha: float = 0.0,
        d_hidden: tuple = (125,),
        d_act: str = "sigmoid",
        optimizer: str = "adam",
        lr_g: float = 1e-5,
        lr_d: float = 1e-4,
        reg_d: float = 0.0,
        batch_size_g: int = 64,
        batch_size_d: int = 64,
        g_steps: int = 1,
        d_steps: int = 1,
        grad_clip: float | None = None,
        collapse_k: int = 20,
        mask_cache_entries: int = 50_000_000,
        seed: int = 0,
        ks: tuple = (5, 10, 20),
        search: dict | None = None,
        select_by: str | None = "val/ndcg@10",
    ):
        super().__init__(
            n_users, n_items, ItemItem(n_items), "users", scheme, negatives, n_items,
            d_hidden, d_act, seed, mask_cache_entries, ks,
        )  # fmt: skip
        self.save_hyperparameters()
        self.search = {k: list(v) for k, v in (search or {}).items()}
        if set(self.search) - {"lam"}:
            raise AdvrecError(
                f"model.search={dict(self.search)}: EASE-GAN's grid chooses only its starting "
                "point, lam (EASE^R's L2 weight); search the adversarial settings with "
                "hparams_search=easegan"
            )
        self.select_by, self.selection = select_by, []
        self.check_limits()
        self.adversarial = adv_weight > 0
        self.register_buffer("w_ease", torch.zeros(n_items, n_items))  # where W started
        self.register_buffer("started", torch.zeros((), dtype=torch.bool))
        self._n_rows = 1
        self._popularity: torch.Tensor | None = None

    def prepare_fit(self, data: FitData) -> None:
        """EASE^R's solution on the training rows, once: a resumed fit keeps its own W."""
        super().prepare_fit(data)
        self._n_rows = max(len(data.row_ids), 1)
        m = data.rows[data.row_ids]
        counts = np.asarray(m.getnnz(axis=0), dtype=np.float32)
        self._popularity = torch.from_numpy(counts / self._n_rows).to(self.device)
        if bool(self.started):
            return
        self.fit_checked(m)
        with torch.no_grad():
            self.w_ease.copy_(self.generator.weight)
        self.started.fill_(True)

    def fit_matrix(self, matrix) -> None:
        """G := EASE^R's solution on `matrix` (users x items) at the current lam: the start,
        and what `search` scores each candidate lam by."""
        w = EASESolver(matrix, self.device)(self.hparams.lam)
        with torch.no_grad():
            self.generator.weight.copy_(w)

    def g_loss(self, batch: dict):
        h, x, ids = self.hparams, batch["x"], batch["ids"]
        g = self.generator(x)
        w = self.generator.weight
        recon = (x - g).pow(2).sum(1).mean() + h.lam / self._n_rows * w.pow(2).sum()
        loss, stats = recon, {"recon": recon}
        if self.adversarial:
            adv = self.fool(x, g * self.fake_mask(ids, x))
            loss = loss + h.adv_weight * adv
            stats["adv"] = adv
        zr_mask = self.zr_mask(ids, x) if h.alpha else None
        if zr_mask is not None:
            zr = (g.pow(2) * zr_mask).sum(1).mean()
            loss = loss + h.alpha * zr
            stats["zr_penalty"] = zr
        return loss, stats

    @torch.no_grad()
    def w_drift(self) -> torch.Tensor:
        """||W - W_EASE|| / ||W_EASE||: how far training moved G from EASE^R's solution."""
        return (self.generator.weight - self.w_ease).norm() / self.w_ease.norm().clamp(min=1e-12)

    @torch.no_grad()
    def diagnostics(self) -> dict[str, torch.Tensor]:
        _, x, out = self.sample_rows()
        k = min(self.hparams.collapse_k, x.shape[1])
        top = out.masked_fill(x > 0, float("-inf")).topk(k, dim=1).indices
        reached = torch.zeros(self.n_items, dtype=torch.bool, device=x.device)
        reached[top.flatten()] = True
        return {
            **super().diagnostics(),
            "w_drift": self.w_drift(),
            "topk_popularity": self._popularity[top].mean(),
            "topk_coverage": reached.float().mean(),
        }

    def score(self, users: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        return self.generator(history)
