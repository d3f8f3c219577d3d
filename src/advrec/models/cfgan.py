"""CFGAN (Chae et al., CIKM 2018): a vector-wise conditional GAN for collaborative filtering.

G maps a row's training vector c (a user's items, or an item's users) to a preference vector;
D tells [c ; c] (real) from [c ; G(c) * mask] (fake). Masking schemes:
  ZR  fake = G(c) * e,            plus alpha * sum(G(c)^2 over N^ZR) in G's loss
  PM  fake = G(c) * (e + k),      k = indicator of N^PM (D then also sees G's unobserved values)
  ZP  both.
N^ZR and N^PM are samples of S% (s_zr, s_pm) of the row's *unobserved* entries, resampled
every epoch: `negatives=independent` draws them independently (the paper's definition), and
`negatives=shared` draws one ordering and takes its first S_zr% and S_pm% (the released code:
its trainer reseeds NumPy from the clock, in whole seconds, right before each of the two
draws, so with S_zr = S_pm they are the same sample and otherwise one holds the other).
One epoch = `d_steps` passes of D over all rows at `batch_size_d`, then
`g_steps` passes of G at `batch_size_g` (the authors' schedule).

`condition` (user rows) says what G and D are conditioned on: `history` (c = the user's
vector, the paper), `history+features` (c = [vector ; encoded features]), `features`
(c = the features alone: cold start, a preference vector for someone never seen), `social`
(c = the friends' pseudo-history: the share of the user's friends that have each item in the
known history, from the user set `set_name`; advrec's extension for social cold start) or
`history+social` (c = [vector ; pseudo-history]). D always sees [c ; real or masked
generated vector].
"""

from __future__ import annotations

import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from advrec.data.batches import ROWS, FitData, Phase, dense_rows
from advrec.errors import AdvrecError
from advrec.models.gan import GANRecommender
from advrec.models.nets import l2, mlp
from advrec.models.samplers import HashedNegatives
from advrec.models.social import SocialHistory, set_block

SCHEMES = ("ZR", "PM", "ZP")
NEGATIVES = ("independent", "shared")
CONDITIONS = ("history", "history+features", "features", "social", "history+social")
ZR, PM = 0, 1  # hash salts of the two negative samples


class ConditionalGAN(GANRecommender):
    """CFGAN's adversarial half, shared by the generators that map a row's vector c to a
    preference vector: the conditional discriminator D([c ; v]) (`d_hidden`, `d_act`), the
    masks of the scheme (ZR, PM, ZP, resampled every epoch) and D's loss. A subclass passes
    its `generator` (built first) and writes `g_loss`; `condition_of` is the row's vector unless the
    subclass conditions on more. Hyper-parameters read here: scheme, s_zr, s_pm, negatives,
    reg_d, d_steps, g_steps, batch_size_d, batch_size_g, collapse_k, lr_g, lr_d."""

    rows = "users"
    adversarial = True  # False: no D passes (a subclass's non-adversarial ablation)

    def __init__(
        self,
        n_users: int,
        n_items: int,
        *,
        generator: nn.Module,
        rows: str,
        scheme: str,
        negatives: str,
        cond_dim: int,
        d_hidden: tuple,
        d_act: str,
        seed: int,
        mask_cache_entries: int,
        ks: tuple,
    ):
        super().__init__(n_users, n_items, ks)
        for name, value, choices in (
            ("scheme", scheme, SCHEMES),
            ("rows", rows, ROWS),
            ("negatives", negatives, NEGATIVES),
        ):
            if value not in choices:
                raise AdvrecError(f"model.{name}={value!r}: choose one of {choices}")
        self.rows = rows
        self.generator = generator  # built by the subclass first: its initialisation draws
        self.discriminator = mlp([cond_dim + self.row_length, *d_hidden, 1], d_act, "none")
        self.negatives = HashedNegatives(seed, mask_cache_entries)
        self._fit: FitData | None = None

    @property
    def row_length(self) -> int:
        """Length of one training row's vector (items for user rows, users for item rows)."""
        return self.n_items if self.rows == "users" else self.n_users

    def phases(self) -> tuple[Phase, ...]:
        h = self.hparams
        d_passes = h.d_steps if self.adversarial else 0
        return (Phase("D", h.batch_size_d, d_passes), Phase("G", h.batch_size_g, h.g_steps))

    def condition_of(self, x: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
        """c for rows `x` (dense vectors) and their encoded `features`: here the vector."""
        return x

    def generate(self, cond: torch.Tensor) -> torch.Tensor:
        return self.generator(cond)

    # -- N^PM and N^ZR ---------------------------------------------------------------------------
    def prepare_fit(self, data: FitData) -> None:
        self._fit = data
        self.negatives.use(data.rows)

    def _sample(self, ids: torch.Tensor, x: torch.Tensor, which: int) -> torch.Tensor:
        """N^PM or N^ZR of rows `ids` this epoch, as 0/1 (one shared salt: nested samples)."""
        h = self.hparams
        salt = ZR if h.negatives == "shared" else which
        percent = h.s_pm if which == PM else h.s_zr
        return self.negatives(ids, x, percent, salt, self.current_epoch).to(x.dtype)

    def fake_mask(self, ids: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """e (+ k under PM/ZP): the entries of G's output that D gets to see."""
        return x if self.hparams.scheme == "ZR" else x + self._sample(ids, x, PM)

    def zr_mask(self, ids: torch.Tensor, x: torch.Tensor) -> torch.Tensor | None:
        """Indicator of N^ZR (None under PM)."""
        return None if self.hparams.scheme == "PM" else self._sample(ids, x, ZR)

    # -- the adversarial losses ------------------------------------------------------------------
    def d_loss(self, batch: dict):
        x = batch["x"]
        cond = self.condition_of(x, batch.get("features"))
        with torch.no_grad():
            fake = self.generate(cond) * self.fake_mask(batch["ids"], x)
        d_real = self.discriminator(torch.cat([cond, x], 1))
        d_fake = self.discriminator(torch.cat([cond, fake], 1))
        loss = (
            F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
            + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
            + self.hparams.reg_d * l2(self.discriminator)
        )
        return loss, {
            "D_real": torch.sigmoid(d_real).mean(),
            "D_fake": torch.sigmoid(d_fake).mean(),
        }

    def fool(self, cond: torch.Tensor, masked_fake: torch.Tensor) -> torch.Tensor:
        """G's adversarial term: -log D([c ; masked G(c)])."""
        d_fake = self.discriminator(torch.cat([cond, masked_fake], 1))
        return F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))

    # -- diagnostics -----------------------------------------------------------------------------
    @torch.no_grad()
    def sample_rows(self, max_rows: int = 4096) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ids, dense vectors, G's output in eval mode) of up to `max_rows` evenly spaced
        training rows."""
        m = self._fit.rows
        feats = self._fit.user_features if self.uses_features else None
        ids = torch.linspace(0, m.shape[0] - 1, min(max_rows, m.shape[0])).long()
        x = dense_rows(m, ids.numpy()).to(self.device)
        cond = self.condition_of(x, None if feats is None else feats[ids].to(self.device))
        was_training = self.training
        self.eval()
        out = self.generate(cond)
        self.train(was_training)
        return ids, x, out

    @torch.no_grad()
    def diagnostics(self) -> dict[str, torch.Tensor]:
        """`topk_in_condition`: the share of G's top-`collapse_k` entries that the row's vector
        already holds. Near 1, G reproduces its input (the identity collapse ECIR 2022 warns
        about) and recommends nothing new."""
        _, x, out = self.sample_rows()
        top = out.topk(min(self.hparams.collapse_k, x.shape[1]), dim=1).indices
        return {"topk_in_condition": x.gather(1, top).gt(0).float().mean()}


class CFGAN(ConditionalGAN):
    """CFGAN; see the module docstring for the method."""

    data_facts = ("n_features", "feature_blocks")

    def __init__(
        self,
        n_users: int,
        n_items: int,
        rows: str = "items",
        scheme: str = "ZP",
        condition: str = "history",
        n_features: int = 0,
        feature_blocks: dict | None = None,
        set_name: str = "friends",
        s_zr: float = 70.0,
        s_pm: float = 70.0,
        negatives: str = "independent",
        alpha: float = 0.03,
        g_hidden: tuple = (400,),
        d_hidden: tuple = (125,),
        g_act: str = "sigmoid",
        g_out_act: str = "none",
        d_act: str = "sigmoid",
        noise_dim: int = 0,
        lr_g: float = 1e-4,
        lr_d: float = 1e-4,
        reg_g: float = 1e-3,
        reg_d: float = 0.0,
        batch_size_g: int = 32,
        batch_size_d: int = 64,
        g_steps: int = 4,
        d_steps: int = 2,
        adversarial: bool = True,
        grad_clip: float | None = None,
        collapse_k: int = 20,
        mask_cache_entries: int = 50_000_000,
        seed: int = 0,
        ks: tuple = (5, 10, 20),
    ):
        if condition not in CONDITIONS:
            raise AdvrecError(f"model.condition={condition!r}: choose one of {CONDITIONS}")
        if condition != "history" and rows != "users":
            raise AdvrecError(f"model.condition={condition} conditions users: set model.rows=users")
        social = None
        if condition in ("social", "history+social"):  # names the missing set, if it is
            social = SocialHistory(set_block(feature_blocks, set_name, "CFGAN"))
        if condition != "history" and n_features == 0:
            raise AdvrecError(
                f"model.condition={condition} needs user features, and the data has none "
                "configured: set data.features.categorical / numeric (and data.features.path "
                "for a CSV keyed by user id)"
            )
        n = n_items if rows == "users" else n_users  # length of one row vector
        c = {
            "history": n,
            "history+features": n + n_features,
            "features": n_features,
            "social": n,
            "history+social": 2 * n,
        }[condition]
        generator = mlp([c + noise_dim, *g_hidden, n], g_act, g_out_act)
        super().__init__(
            n_users,
            n_items,
            generator=generator,
            rows=rows,
            scheme=scheme,
            negatives=negatives,
            cond_dim=c,
            d_hidden=d_hidden,
            d_act=d_act,
            seed=seed,
            mask_cache_entries=mask_cache_entries,
            ks=ks,
        )
        self.save_hyperparameters()
        self.uses_features = condition != "history"
        self.reads_history = rows == "users" and "history" in condition
        self.social = social
        self.adversarial = adversarial
        self._all_scores: torch.Tensor | None = None

    def condition_of(self, x: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
        """c for rows `x` (dense vectors) and their encoded `features`."""
        kind = self.hparams.condition
        if kind == "history":
            return x
        if features is None:
            raise AdvrecError(f"model.condition={kind}: the batch carries no user features")
        if self.social is not None:
            p = self.social.mean(features).to(x.dtype)
            return p if kind == "social" else torch.cat([x, p], 1)
        f = features.to(x.dtype)
        return f if kind == "features" else torch.cat([x, f], 1)

    def prepare_fit(self, data: FitData) -> None:
        super().prepare_fit(data)
        if self.social is not None:  # training pseudo-histories: the friends' training items
            self.social.use(data.train, self.device)

    def generate(self, cond: torch.Tensor) -> torch.Tensor:
        if self.hparams.noise_dim:
            z = torch.randn if self.training else torch.zeros
            noise = z(len(cond), self.hparams.noise_dim, device=cond.device, dtype=cond.dtype)
            cond = torch.cat([cond, noise], 1)
        return self.generator(cond)

    # -- G's loss -------------------------------------------------------------------------------
    def g_loss(self, batch: dict):
        h, x, ids = self.hparams, batch["x"], batch["ids"]
        cond = self.condition_of(x, batch.get("features"))
        fake_mask, zr_mask = self.fake_mask(ids, x), self.zr_mask(ids, x)
        g = self.generate(cond)
        zr = (g.pow(2) * zr_mask).sum(1).mean() if zr_mask is not None else g.new_zeros(())
        if self.adversarial:
            fit = self.fool(cond, g * fake_mask)
        else:  # ablation: G alone learns to reproduce the masked entries (1 on e, 0 on k)
            fit = ((g - x).pow(2) * fake_mask).sum(1).mean()
        return fit + h.reg_g * l2(self.generator) + h.alpha * zr, {"zr_penalty": zr}

    # -- scoring ---------------------------------------------------------------------------------
    @torch.no_grad()
    def prepare_scoring(self, history: sp.csr_matrix) -> None:
        """Item-based: generate every item's row once from `history`, transpose, cache.
        Social conditions: the friends' pseudo-histories come from `history`."""
        self._all_scores = None
        if self.social is not None:
            self.social.use(history, self.device)
        if self.rows == "users":
            return
        cols = history.T.tocsr()  # items x users
        out = torch.empty(self.n_users, self.n_items, device=self.device)
        for lo in range(0, self.n_items, 1024):
            idx = torch.arange(lo, min(lo + 1024, self.n_items))
            out[:, lo : lo + len(idx)] = (
                self.generate(dense_rows(cols, idx.numpy()).to(self.device)).float().T
            )
        self._all_scores = out

    def score_batch(self, batch: dict) -> torch.Tensor:
        if self.rows == "users":
            return self.generate(self.condition_of(batch["history"], batch.get("features")))
        if self._all_scores is None:
            raise RuntimeError("call prepare_scoring(history) before scoring an item-based CFGAN")
        return self._all_scores[batch["users"]]
