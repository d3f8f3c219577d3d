"""EASE-GAN (advrec's own): an adversarial item-item generator that starts where EASE^R ends.

G maps a user's history x to scores x W with an item-item W = B + Delta whose diagonal is
zero, as in EASE^R (Steck 2019). B is EASE^R's closed-form solution on the training rows,
frozen and never checkpointed (rebuilt from the training matrix, which checkpoints keep in
sparse form); G trains only the correction

    Delta = U V^T - diag(d),  d_i = u_i . v_i        (rank `rank`: zero diagonal by construction)

U starts random and V at zero, so Delta = 0. (A dense n x n Delta was measured against
rank 64 on ML100K and Ciao, 5 seeds each: no better, 1.6x the time, n^2 parameters; dropped.)
D is CFGAN's conditional discriminator (`ConditionalGAN`): real [x ; x], fake
[x ; G(x) * mask], with the scheme's masks (ZR: D sees the observed entries; PM/ZP: also a
fresh sample of s_pm % of the unobserved ones each epoch).

EASE^R's objective f(W) = (||X - X W||^2 + lam ||W||^2) / n_rows is quadratic and B is its
minimiser over zero-diagonal W, so for every zero-diagonal Delta, exactly,

    f(B + Delta) = f(B) + (||X Delta||^2 + lam ||Delta||^2) / n_rows.

G's loss is that excess (its batch estimate: mean_u ||x_u Delta||^2 + lam / n_rows ||Delta||^2)

  + adv_weight * -log D([x ; G(x) * mask])                 the adversary
  + alpha * mean_u sum_{N^ZR} G(x)^2                       CFGAN's ZR penalty (ZR, ZP)

A minibatch of f itself has a non-zero gradient at B (only the sum over all rows vanishes),
which Adam, normalising per coordinate, turned into a step of about lr_g on every entry;
the excess has an exactly zero gradient at Delta = 0 in every batch. So with `adv_weight=0`
(and alpha=0) G never moves and the ablation *is* EASE^R (its metrics equal EASE^R's): any
gain over EASE^R is the adversary's. Logged each epoch besides the losses: `w_drift`
(||Delta|| / ||B||), `topk_popularity` (the mean share of training rows holding an item of
the users' unseen top-`collapse_k`), `topk_coverage` (the share of the catalogue those lists
reach) and `topk_in_condition` (the identity-collapse share; see `ConditionalGAN.diagnostics`).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from advrec.data.batches import FitData
from advrec.errors import AdvrecError
from advrec.models.base import GridSearchable
from advrec.models.cfgan import ConditionalGAN
from advrec.models.ease import EASESolver


class LowRankDelta(nn.Module):
    """Delta = U V^T - diag(d), d_i = u_i . v_i: x Delta = (x U) V^T - x * d, never n x n."""

    def __init__(self, n: int, rank: int):
        super().__init__()
        self.u = nn.Parameter(torch.randn(n, rank) / math.sqrt(rank))  # entries of x Delta
        self.v = nn.Parameter(torch.zeros(n, rank))  # move like one of W's entries (~lr)

    def diagonal(self) -> torch.Tensor:
        return (self.u * self.v).sum(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.u) @ self.v.T - x * self.diagonal()

    def sq_norm(self) -> torch.Tensor:
        """||Delta||_F^2 = ||U V^T||_F^2 - ||d||^2, from r x r products."""
        return ((self.u.T @ self.u) * (self.v.T @ self.v)).sum() - self.diagonal().pow(2).sum()

    def reset(self) -> None:
        with torch.no_grad():
            self.v.zero_()


def _whole(value) -> bool:
    """A whole number >= 1 (not a bool, not a string)."""
    return type(value) in (int, float) and value >= 1 and value == int(value)


class BasePlusDelta(nn.Module):
    """x -> x B + x Delta: B a frozen, non-persistent buffer (a sparse product: histories
    are sparse, B is not), Delta trained."""

    def __init__(self, delta: nn.Module):
        super().__init__()
        self.delta = delta
        self.register_buffer("base", torch.zeros(0), persistent=False)  # set by EASEGAN

    def base_scores(self, x: torch.Tensor) -> torch.Tensor:
        """x B, in float32 whatever the autocast."""
        with torch.autocast(x.device.type, enabled=False):
            return torch.sparse.mm(x.float().to_sparse(), self.base)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_scores(x) + self.delta(x)


class EASEGAN(GridSearchable, ConditionalGAN):
    """See the module docstring. `lam` is EASE^R's L2 weight (the start's and the excess
    term's); fix it to the tuned EASE^R's of the same data, or let `search={lam: [...]}`
    choose it on validation in every run as EASE^R's grid does: the protocol scores each
    candidate's starting point (`fit_matrix`, before any training step) by `select_by` and
    trains from the best. `rank`: Delta's rank."""

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
        rank: int = 64,
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
        if not _whole(rank):
            raise AdvrecError(f"model.rank={rank!r}: it must be a whole number >= 1 (Delta's rank)")
        generator = BasePlusDelta(LowRankDelta(n_items, int(rank)))
        super().__init__(
            n_users,
            n_items,
            generator=generator,
            rows="users",
            scheme=scheme,
            negatives=negatives,
            cond_dim=n_items,
            d_hidden=d_hidden,
            d_act=d_act,
            seed=seed,
            mask_cache_entries=mask_cache_entries,
            ks=ks,
        )
        self.save_hyperparameters()
        self.init_search(
            search,
            select_by,
            only={"lam"},
            why="EASE-GAN's grid chooses only its starting point, lam (EASE^R's L2 weight); "
            "search the adversarial settings with hparams_search=easegan",
        )
        self.check_limits()
        self.adversarial = adv_weight > 0
        self.register_buffer("started", torch.zeros((), dtype=torch.bool))
        self._start: sp.csr_matrix | None = None  # the training rows B solves EASE^R on
        self._base_norm = 1.0
        self._n_rows = 1
        self._popularity: torch.Tensor | None = None

    @property
    def delta(self) -> nn.Module:
        return self.generator.delta

    def prepare_fit(self, data: FitData) -> None:
        """B := EASE^R's solution on the training rows; Delta starts at zero, except in a
        resumed fit, which keeps its own."""
        super().prepare_fit(data)
        self._n_rows = max(len(data.row_ids), 1)
        m = data.rows[data.row_ids]
        counts = np.asarray(m.getnnz(axis=0), dtype=np.float32)
        self._popularity = torch.from_numpy(counts / self._n_rows).to(self.device)
        if bool(self.started):
            self._solve(m)
            return
        self.fit_checked(m)
        self.started.fill_(True)

    def fit_matrix(self, matrix) -> None:
        """G := EASE^R's solution on `matrix` (users x items) at the current lam (Delta = 0):
        the start, and what `search` scores each candidate lam by."""
        self._solve(matrix)
        self.delta.reset()

    def _solve(self, matrix) -> None:
        self._start = sp.csr_matrix(matrix, dtype=np.float32)
        self.generator.base = EASESolver(self._start, self.device)(self.hparams.lam)
        self._base_norm = float(self.generator.base.norm()) or 1.0

    def _base_ready(self) -> None:
        if self.generator.base.numel() == 0:  # loaded from a checkpoint: solve B again
            if self._start is None:
                raise AdvrecError("EASE-GAN scored before its start (EASE^R's B) was solved")
            self._solve(self._start)

    def generate(self, cond: torch.Tensor) -> torch.Tensor:
        self._base_ready()
        return self.generator(cond)

    def g_loss(self, batch: dict):
        h, x, ids = self.hparams, batch["x"], batch["ids"]
        self._base_ready()
        xd = self.delta(x)  # once: G's output and the excess share it
        g = self.generator.base_scores(x) + xd
        excess = xd.pow(2).sum(1).mean() + h.lam / self._n_rows * self.delta.sq_norm()
        loss, stats = excess, {"excess": excess}
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
        """||Delta|| / ||B||: how far training moved G from EASE^R's solution."""
        return self.delta.sq_norm().clamp(min=0).sqrt() / self._base_norm

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
        return self.generate(history)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """The training rows B was solved on (sparse: B itself is n x n), so a loaded model
        scores without the data."""
        super().on_save_checkpoint(checkpoint)
        if self._start is not None:
            m = self._start
            checkpoint["advrec_easegan_start"] = {
                "shape": list(m.shape),
                **{
                    k: torch.from_numpy(getattr(m, k).copy()) for k in ("indptr", "indices", "data")
                },
            }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        if "generator.weight" in checkpoint.get("state_dict", {}):
            raise AdvrecError(
                "this EASE-GAN checkpoint holds a dense W (written before W = B + Delta); "
                "retrain it with this version"
            )
        start = checkpoint.get("advrec_easegan_start")
        if start is not None:
            parts = (start[k].numpy() for k in ("data", "indices", "indptr"))
            self._start = sp.csr_matrix(tuple(parts), shape=tuple(start["shape"]))
            self.generator.base = torch.zeros(0, device=self.device)
