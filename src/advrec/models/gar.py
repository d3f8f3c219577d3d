"""GAR (Chen et al., SIGIR 2022): a generator from content to a warm recommender's embedding
space, trained against that recommender as its adversary, here for *user* cold start.

Released code followed: zfnWong/GAR, `GAR/gar_mlp.py` and `GAR/main.py` (the MLP variant). GAR
is written for cold items; advrec transposes it: the content is a user's encoded features (on
Last.fm the friends' multi-hot), the generator G maps it to the warm model's user embedding,
and the recommender R scores an (item, user embedding) pair by two towers and a dot product.
For a training pair (warm user u, an item i of theirs) and a random warm user v:

    R's loss: -log s( R(i, e_u) - alpha R(i, e_v) - (1 - alpha) R(i, G(c_u)) ) + reg_d |R|^2
    G's loss: -(1 - sim) log s( R(i, G(c_u)) - R(i, e_u) ) + sim |G(c_u) - e_u|_1 + reg_g |G|^2

so R learns to rank real embeddings above both a random user's and the generated one, and G
to make its embedding rank as high as the real one and stay near it. A user it never trained
on (cold, or new in advrec-recommend) is scored by R(., G(c_u)); a warm user by R(., e_u).

`content` chooses c_u: `features` (the encoded features as they are) or `neighbours` (the mean
warm embedding of the users in the user set `set_name`, e.g. the friends: the aggregation of
GAR's GNN variant, `GAR/gar_gnn.py`, over the social graph instead of the interaction graph;
cold friends have no embedding and count as zeros, so nothing of a cold user reaches it).

Where advrec departs: the warm embeddings are iALS's (`ials_embeddings` on the training matrix
at the start of the fit) where GAR's scripts load BPR-MF's; an epoch is a pass of R updates
then a pass of G updates over the warm users, each user with `positives` of its items drawn
per step (GAR alternates one R and one G update per batch of shuffled pairs); the MLPs have no
batch normalisation or dropout; L2 covers biases too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from advrec.data.batches import FitData, Phase
from advrec.errors import AdvrecError
from advrec.models.base import require_features
from advrec.models.gan import GANRecommender
from advrec.models.ials import warm_embeddings
from advrec.models.nets import l2, mlp
from advrec.models.social import set_block

UNIT = ("a number in [0, 1]", lambda v: 0 <= v <= 1)
WHOLE = ("a whole number >= 1", lambda v: v >= 1 and v == int(v))


class GAR(GANRecommender):
    """See the module docstring."""

    uses_features = True
    data_facts = ("n_features", "feature_blocks")
    limits = {
        "alpha": UNIT,
        "sim": UNIT,
        "dim": WHOLE,
        "positives": WHOLE,
        "warm_sweeps": WHOLE,
        "warm_reg": ("a number > 0", lambda v: v > 0),
        "reg_g": ("a number >= 0", lambda v: v >= 0),
        "reg_d": ("a number >= 0", lambda v: v >= 0),
    }

    def __init__(
        self,
        n_users: int,
        n_items: int,
        n_features: int = 0,
        feature_blocks: dict | None = None,
        content: str = "features",
        set_name: str = "friends",
        dim: int = 64,
        g_hidden: tuple = (200,),
        d_hidden: tuple = (256, 256),
        g_act: str = "tanh",
        d_act: str = "relu",
        alpha: float = 0.9,
        sim: float = 0.1,
        lr_g: float = 1e-3,
        lr_d: float = 1e-3,
        reg_g: float = 1e-3,
        reg_d: float = 1e-3,
        batch_size: int = 64,
        positives: int = 16,
        warm_reg: float = 0.003,
        warm_sweeps: int = 8,
        seed: int = 0,
        ks: tuple = (5, 10, 20),
    ):
        super().__init__(n_users, n_items, ks)
        self.save_hyperparameters()
        require_features(n_features, "GAR", "generates a user's embedding from their features")
        self.check_limits()
        if content not in ("features", "neighbours"):
            raise AdvrecError(f"model.content={content!r}: choose features or neighbours")
        self.block = set_block(feature_blocks, set_name, "GAR") if content == "neighbours" else None
        width = dim if content == "neighbours" else n_features
        self.generator = mlp([width, *g_hidden, dim], g_act, "none")
        towers = {side: mlp([dim, *d_hidden], d_act, "none") for side in ("user", "item")}
        self.discriminator = nn.ModuleDict(towers)  # the recommender R: the adversary
        self.register_buffer("user_emb", torch.zeros(n_users, dim))  # the warm model's
        self.register_buffer("item_emb", torch.zeros(n_items, dim))
        self.register_buffer("warm", torch.zeros(n_users, dtype=torch.bool))
        self._warm_ids: torch.Tensor | None = None

    def phases(self) -> tuple[Phase, ...]:
        bs = int(self.hparams.batch_size)
        return (Phase("D", bs), Phase("G", bs))

    def prepare_fit(self, data: FitData) -> None:
        users, items, warm = warm_embeddings(data.train, self.hparams)
        self.user_emb.copy_(users)
        self.item_emb.copy_(items)
        self.warm.copy_(warm)
        self._warm_ids = torch.from_numpy(data.row_ids).long().to(self.device)

    def content_of(self, features: torch.Tensor) -> torch.Tensor:
        """c_u for a batch of encoded feature rows."""
        if self.block is None:
            return features.float()
        lo, hi = self.block
        friends = features[:, lo:hi].float()
        return friends @ self.user_emb / friends.sum(1, keepdim=True).clamp(min=1.0)

    # -- the adversarial pair ------------------------------------------------------------------
    def rank(self, items: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        """R(item, user embedding) for aligned rows."""
        t = self.discriminator
        return (t["item"](self.item_emb[items]) * t["user"](users)).sum(-1)

    def _pairs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """`positives` items drawn from each user's row, and the rows' positions per pair
        (rows without items, which warm splits keep as training rows, give none)."""
        k, x = int(self.hparams.positives), batch["x"].float()
        rows = (x.sum(1) > 0).nonzero().squeeze(1)
        items = torch.multinomial(x[rows], k, replacement=True).flatten() if len(rows) else rows
        return items, rows.repeat_interleave(k)

    def d_loss(self, batch: dict):
        items, at = self._pairs(batch)
        if not len(items):
            return None
        with torch.no_grad():
            fake = self.generator(self.content_of(batch["features"]))[at]
        real = self.user_emb[batch["ids"]][at]
        pick = torch.randint(len(self._warm_ids), (len(items),), device=items.device)
        neg = self.user_emb[self._warm_ids[pick]]
        r_real, r_neg, r_fake = (self.rank(items, e) for e in (real, neg, fake))
        a = self.hparams.alpha
        logit = r_real - a * r_neg - (1 - a) * r_fake
        loss = F.softplus(-logit).mean() + self.hparams.reg_d * l2(self.discriminator)
        return loss, {"D_real_over_fake": (r_real > r_fake).float().mean()}

    def g_loss(self, batch: dict):
        items, at = self._pairs(batch)
        if not len(items):
            return None
        gen = self.generator(self.content_of(batch["features"]))
        real = self.user_emb[batch["ids"]]
        s = self.hparams.sim
        adv = F.softplus(-(self.rank(items, gen[at]) - self.rank(items, real[at]))).mean()
        close = (gen - real).abs().sum(-1).mean()
        loss = (1 - s) * adv + s * close + self.hparams.reg_g * l2(self.generator)
        return loss, {"g_l1_to_real": close}

    # -- scoring --------------------------------------------------------------------------------
    def score_batch(self, batch: dict) -> torch.Tensor:
        users = batch["users"]
        emb = self.generator(self.content_of(batch["features"]))
        if not self.scoring_new_users:
            warm = self.warm[users]
            emb = torch.where(warm[:, None], self.user_emb[users], emb)
        t = self.discriminator
        return t["user"](emb) @ t["item"](self.item_emb).T
