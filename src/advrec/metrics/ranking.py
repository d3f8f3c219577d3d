"""Top-K ranking metrics as one `torchmetrics.Metric` with sum/count states (DDP-safe).

Definitions (CFGAN / ECIR-2022, averaged over users with at least one held-out item; each is
one function of `metrics/functional.py`): P@k = hits/k; R@k = hits/|T_u|; NDCG@k with binary
gain, 1/log2(rank+1) discount and IDCG over min(k, |T_u|); MRR@k = 1/rank of the first hit
within k (else 0); Hit@k = any hit; MAP@k = the precisions at the hits' ranks summed over
min(k, |T_u|). Coverage@k = share of the catalogue that appears in at least one user's top-k.
Ties are broken towards the lower item index, so results never depend on the sort kernel.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from advrec.metrics.functional import PER_USER_METRICS
from advrec.metrics.names import PER_USER


def topk_ranked(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k (values, indices) per row, ordered by score desc, then item index asc.

    `torch.topk` alone leaves ties in an unspecified order and may pick any of the tied items
    at the k-th position. Taking k+1 values shows which rows have a tie across the cut (the
    (k+1)-th value equals the k-th); only those rows are re-selected exactly.
    """
    n = scores.shape[1]
    vals, idx = torch.topk(scores, min(k + 1, n), dim=1)
    if n > k:
        bad = torch.nonzero(vals[:, k] == vals[:, k - 1]).flatten()
        vals, idx = vals[:, :k].contiguous(), idx[:, :k].contiguous()
        if len(bad):
            sub = scores[bad]
            t = vals[bad, k - 1 :]
            eq = sub == t
            room = k - (sub > t).sum(1, keepdim=True)
            chosen = (sub > t) | (eq & (eq.cumsum(1) <= room))
            idx[bad] = chosen.nonzero()[:, 1].view(-1, k)
            vals[bad] = sub.gather(1, idx[bad])
    # stable order: by index, then by value descending (stable keeps index order in ties)
    idx, perm = idx.sort(dim=1)
    vals = vals.gather(1, perm)
    vals, perm = vals.sort(dim=1, descending=True, stable=True)
    return vals, idx.gather(1, perm)


class RankingMetrics(Metric):
    """P/R/NDCG/MRR/Hit and coverage at several K, from dense scores and targets.

    `update(scores, target, users)`: scores (B, n_items) with already-seen items set to -inf,
    target (B, n_items) bool, users (B,) their indices. Items scored -inf never count as hits.
    Users with no target are left out of the means and counted in `n_users_without_targets`.
    With `per_user`, every evaluated user's values are kept too (gathered across processes)
    and `compute()` leaves them, sorted by user, in `self.per_user_values`.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(
        self,
        ks: Sequence[int] = (5, 10, 20),
        n_items: int | None = None,
        per_user: bool = False,
        **kw,
    ):
        super().__init__(**kw)
        self.ks = sorted({int(k) for k in ks})
        self.n_items = n_items
        self.keeps_users = per_user
        self.per_user_values: dict | None = None
        if per_user:  # one row per evaluated user: its index, its number of targets, values
            self.add_state("users", [], dist_reduce_fx="cat")
            self.add_state("user_targets", [], dist_reduce_fx="cat")
            self.add_state("user_values", [], dist_reduce_fx="cat")
        sums = torch.zeros(len(PER_USER), len(self.ks), dtype=torch.float64)
        self.add_state("sums", sums, dist_reduce_fx="sum")
        self.add_state("n_users", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state(
            "n_users_without_targets", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum"
        )
        if n_items:
            self.add_state("recommended", torch.zeros(len(self.ks), n_items), dist_reduce_fx="sum")

    def update(
        self, scores: torch.Tensor, target: torch.Tensor, users: torch.Tensor | None = None
    ) -> None:
        kmax = self.ks[-1]
        if kmax > scores.shape[1]:
            raise ValueError(f"K={kmax} exceeds the number of items ({scores.shape[1]})")
        target = target.bool()
        n_rel = target.sum(1)
        has = n_rel > 0
        # states are replaced, never updated in place: a reset() under inference mode (as in
        # Trainer.test) leaves inference tensors that a later no-grad loop (DDP) cannot mutate
        self.n_users_without_targets = self.n_users_without_targets + (~has).sum()
        vals, idx = topk_ranked(scores.float(), kmax)
        if self.n_items:
            seen = torch.zeros_like(self.recommended)
            for j, k in enumerate(self.ks):
                seen[j].index_fill_(0, idx[:, :k].flatten(), 1.0)
            self.recommended = torch.maximum(self.recommended, seen)
        vals, idx, target, n_rel = vals[has], idx[has], target[has], n_rel[has]
        self.n_users = self.n_users + len(n_rel)
        if len(n_rel) == 0:
            return
        if self.keeps_users and users is None:
            raise ValueError("RankingMetrics(per_user=True).update needs the batch's users")
        hits = target.gather(1, idx) & (vals > float("-inf"))
        hits_f = hits.to(torch.float64)
        ranks = torch.arange(1, kmax + 1, device=scores.device, dtype=torch.float64)
        disc = 1.0 / torch.log2(ranks + 1)
        ranked = SimpleNamespace(
            hits=hits_f,
            n_hits=hits_f.cumsum(1),
            dcg=(hits_f * disc).cumsum(1),
            idcg=disc.cumsum(0),
            n_rel=n_rel,
            first=torch.where(hits.any(1), hits.to(torch.int8).argmax(1), kmax),  # 0-based
            ranks=ranks,
        )
        # each user's values: (B, len(PER_USER), len(ks)), in PER_USER's order
        values = torch.stack(
            [
                torch.stack([PER_USER_METRICS[name](ranked, k) for name in PER_USER], 1)
                for k in self.ks
            ],
            2,
        )
        self.sums = self.sums + values.sum(0)
        if self.keeps_users:
            self.users.append(users[has].to(torch.long))
            self.user_targets.append(n_rel.to(torch.long))
            self.user_values.append(values.to(torch.float32))

    def compute(self) -> dict[str, torch.Tensor]:
        out = {}
        denom = self.n_users.clamp(min=1).to(torch.float64)
        for i, name in enumerate(PER_USER):
            for j, k in enumerate(self.ks):
                out[f"{name}@{k}"] = (self.sums[i, j] / denom).float()
        if self.n_items:
            for j, k in enumerate(self.ks):
                out[f"coverage@{k}"] = (self.recommended[j] > 0).float().mean()
        if self.keeps_users:  # the synced (all processes') rows, in user order
            self.per_user_values = self._gathered_users()
        # counts from the synced states (the attributes hold this process's shard only)
        out["n_users"] = self.n_users.float()
        out["n_users_without_targets"] = self.n_users_without_targets.float()
        return out

    def _gathered_users(self) -> dict:
        """{"users", "n_targets", "values" (n, len(PER_USER), len(ks))} sorted by user."""
        if isinstance(self.users, list) and not self.users:  # no user had a target
            empty = torch.zeros(0, dtype=torch.long)
            values = torch.zeros(0, len(PER_USER), len(self.ks))
            return {"users": empty, "n_targets": empty, "values": values}
        users = dim_zero_cat(self.users).cpu()
        order = torch.argsort(users, stable=True)
        return {
            "users": users[order],
            "n_targets": dim_zero_cat(self.user_targets).cpu()[order],
            "values": dim_zero_cat(self.user_values).cpu()[order],
        }
