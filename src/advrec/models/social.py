"""Recommending from a user's friends: the baselines a social cold-start generator must beat.

Both read a user set (`data.features.sets.<set_name>`, e.g. Last.fm friendships) from the
encoded features and the friends' *known* histories: the history of the stage being scored
(train at validation, train + validation at test, the checkpoint's known users in
advrec-recommend). A cold user's own interactions never enter that history, so nothing of
theirs reaches a score except the items they reveal (few-shot) as their own history.

- `SocialPop`: how many of the user's friends played each item, TopPop below 1 as a
  tie-break, so a user whose friends played nothing gets TopPop (the back-off).
- `SocialEASE`: the social fold-in: EASE^R's item-item B (fitted on the training matrix) scores
  the user's own items plus `social_weight` x the friends' mean history, (h + w p) B. It needs
  no training for new users; a user with neither gets TopPop.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch

from advrec.errors import AdvrecError
from advrec.models.base import ClosedForm
from advrec.models.ease import EASE


def set_block(feature_blocks: dict | None, set_name: str, model: str) -> tuple[int, int]:
    """[start, stop) of user set `set_name` in the encoded features, or one line saying how
    to configure it."""
    blocks = {k: tuple(v) for k, v in (feature_blocks or {}).items()}
    if set_name not in blocks:
        raise AdvrecError(
            f"{model} reads the user set {set_name!r} (e.g. friends), which the data does not "
            f"configure (encoded features: {sorted(blocks) or 'none'}); use data="
            "lastfm_coldstart or lastfm_coldstart_heater, or add data.features.sets."
            f"{set_name}"
        )
    return blocks[set_name]


def sparse_history(history: sp.csr_matrix, device) -> torch.Tensor:
    """A users x items 0/1 matrix as a torch sparse (COO) tensor on `device`."""
    m = sp.coo_matrix(history, dtype=np.float32)
    index = torch.from_numpy(np.vstack([m.row, m.col]).astype(np.int64))
    ones = torch.ones(m.nnz, dtype=torch.float32)
    return (
        torch.sparse_coo_tensor(index, ones, m.shape, check_invariants=False).coalesce().to(device)
    )


def tiebreak_popularity(matrix: sp.csr_matrix, n_items: int) -> torch.Tensor:
    """Item counts of `matrix` scaled below 1 (count / (max + 1)): TopPop as a tie-break
    that never outweighs one unit of real evidence, and the back-off for empty rows."""
    counts = np.bincount(matrix.indices, minlength=n_items).astype(np.float32)
    return torch.from_numpy(counts / (counts.max() + 1.0))


class SocialHistory:
    """The friends' known histories of a batch of users: `friends (B x users) @ H`, with H the
    history of the stage being scored (set by `use`)."""

    def __init__(self, block: tuple[int, int]):
        self.block = block
        self._ht: torch.Tensor | None = None  # items x users

    def use(self, history: sp.csr_matrix, device) -> None:
        self._ht = sparse_history(history.T, device)

    def friends(self, features: torch.Tensor) -> torch.Tensor:
        lo, hi = self.block
        return features[:, lo:hi].float()

    def counts(self, features: torch.Tensor) -> torch.Tensor:
        """(B, items): how many of each user's friends have each item."""
        if self._ht is None:
            raise RuntimeError("call prepare_scoring(history) before scoring")
        f = self.friends(features)
        return torch.sparse.mm(self._ht, f.T).T  # (H^T f^T)^T = f H, sparse on the left

    def mean(self, features: torch.Tensor) -> torch.Tensor:
        """(B, items): the share of each user's friends that have each item (0 without any)."""
        f = self.friends(features)
        return self.counts(features) / f.sum(1, keepdim=True).clamp(min=1.0)


class SocialPop(ClosedForm):
    """Items by how many of the user's friends have them; TopPop breaks ties and stands in
    where the friends have nothing."""

    uses_features = True
    data_facts = ("feature_blocks",)

    def __init__(
        self,
        n_users: int,
        n_items: int,
        feature_blocks: dict | None = None,
        set_name: str = "friends",
        ks: Sequence[int] = (5, 10, 20),
        search: dict | None = None,
        select_by: str | None = "val/ndcg@10",
    ):
        super().__init__(n_users, n_items, ks, search, select_by)
        self.save_hyperparameters()
        self.social = SocialHistory(set_block(feature_blocks, set_name, "SocialPop"))
        self.register_buffer("popularity", torch.zeros(n_items))

    def fit_matrix(self, matrix: sp.csr_matrix) -> None:
        self.popularity = tiebreak_popularity(matrix, self.n_items).to(self.device)

    def prepare_scoring(self, history: sp.csr_matrix) -> None:
        self.social.use(history, self.device)

    def score_batch(self, batch: dict) -> torch.Tensor:
        return self.social.counts(batch["features"]) + self.popularity


class SocialEASE(EASE):
    """The social fold-in of EASE^R: (own items + social_weight x friends' mean history) B."""

    uses_features = True
    data_facts = ("feature_blocks",)
    limits = {
        **EASE.limits,
        "social_weight": ("a number >= 0", lambda v: v >= 0),
    }

    def __init__(
        self,
        n_users: int,
        n_items: int,
        lam: float = 500.0,
        social_weight: float = 1.0,
        feature_blocks: dict | None = None,
        set_name: str = "friends",
        **kw,
    ):
        super().__init__(n_users, n_items, lam=lam, **kw)  # checks social_weight too
        self.save_hyperparameters()
        self.social = SocialHistory(set_block(feature_blocks, set_name, "SocialEASE"))
        self.register_buffer("popularity", torch.zeros(n_items))

    def fit_matrix(self, matrix: sp.csr_matrix) -> None:
        super().fit_matrix(matrix)
        self.popularity = tiebreak_popularity(matrix, self.n_items).to(self.device)

    def prepare_scoring(self, history: sp.csr_matrix) -> None:
        self.social.use(history, self.device)

    def score_batch(self, batch: dict) -> torch.Tensor:
        w = float(self.hparams.social_weight)
        x = batch["history"].float() + w * self.social.mean(batch["features"])
        scores = x @ self.B
        empty = (x.sum(1, keepdim=True) == 0).expand_as(scores)
        return torch.where(empty, self.popularity.expand_as(scores), scores)
