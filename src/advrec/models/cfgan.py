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
`g_steps` passes of G at `batch_size_g` (the authors' schedule, served by the DataModule).

`condition` (user rows) says what G and D are conditioned on: `history` (c = the user's
vector, the paper), `history+features` (c = [vector ; encoded features]) or `features`
(c = the features alone: cold start, a preference vector for someone never seen). D always
sees [c ; real or masked generated vector].
"""

from __future__ import annotations

import scipy.sparse as sp
import torch
import torch.nn.functional as F

from advrec.data.batches import dense_rows
from advrec.errors import AdvrecError
from advrec.models.base import Recommender
from advrec.models.nets import l2, mlp

SCHEMES = ("ZR", "PM", "ZP")
NEGATIVES = ("independent", "shared")
CONDITIONS = ("history", "history+features", "features")
ZR, PM = 0, 1  # salts of the two negative samples
D_PHASE, G_PHASE = 0, 1

# splitmix64 constants as signed int64 (torch has no uint64 arithmetic)
_GOLDEN, _M1, _M2 = -7046029254386353131, -4658895280553007687, -7723592293110705685


def _lsr(z: torch.Tensor, s: int) -> torch.Tensor:
    return (z >> s) & ((1 << (64 - s)) - 1)  # logical shift right on int64


def _mix(z: torch.Tensor) -> torch.Tensor:
    z = z + _GOLDEN
    z = (z ^ _lsr(z, 30)) * _M1
    z = (z ^ _lsr(z, 27)) * _M2
    return z ^ _lsr(z, 31)


def negative_sample(
    rows: torch.Tensor, x: torch.Tensor, percent: float, seed: int, epoch: int, salt: int
) -> torch.Tensor:
    """Bool mask of floor(percent * |unobserved| / 100) unobserved entries per row.

    The choice is a hash of (seed, epoch, salt, row, column): the same row gets the same
    sample in every batch of an epoch (D and G phases agree), a new one each epoch, and the
    two salts give independent samples. Runs on x's device; nothing dense beyond the batch.
    """
    b, n = x.shape
    if percent <= 0:
        return torch.zeros_like(x, dtype=torch.bool)
    key = torch.tensor([(seed * 1_000_003 + epoch) * 7 + salt], device=x.device)
    ids = rows.to(torch.int64)[:, None] * n + torch.arange(n, device=x.device)
    u = _lsr(_mix(ids ^ _mix(key)), 1)  # uniform non-negative int64 keys
    observed = x > 0
    u = u.masked_fill(observed, torch.iinfo(torch.int64).max)
    n_pick = (percent * (~observed).sum(1, dtype=torch.int64)).div(100, rounding_mode="floor")
    kth = u.sort(1).values.gather(1, (n_pick - 1).clamp(min=0)[:, None].long())
    return (u <= kth) & (n_pick > 0)[:, None] & ~observed


def sample_salt(salt: int, negatives: str) -> int:
    """The hash salt of N^ZR (salt ZR) or N^PM (salt PM): one shared salt makes the samples
    nested prefixes of one ordering, as in the released code."""
    return ZR if negatives == "shared" else salt


def epoch_masks(m: sp.csr_matrix, h, epoch: int, device) -> dict[int, torch.Tensor]:
    """N^PM and N^ZR of every row of `m` for `epoch`, as {salt: (rows, n) bool}."""
    wanted = {PM: h.s_pm if h.scheme != "ZR" else 0, ZR: h.s_zr if h.scheme != "PM" else 0}
    masks = {}
    for salt, percent in wanted.items():
        if percent <= 0:
            continue
        out = torch.empty(m.shape, dtype=torch.bool, device=device)
        for lo in range(0, m.shape[0], 4096):
            rows = torch.arange(lo, min(lo + 4096, m.shape[0]))
            x = dense_rows(m, rows.numpy()).to(device)
            out[lo : lo + len(rows)] = negative_sample(
                rows.to(device), x, percent, h.seed, epoch, sample_salt(salt, h.negatives)
            )
        masks[salt] = out
    return masks


class CFGAN(Recommender):
    """CFGAN with manual optimisation; see the module docstring for the method."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        rows: str = "items",
        scheme: str = "ZP",
        condition: str = "history",
        n_features: int = 0,
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
        super().__init__(n_users, n_items, ks)
        if scheme not in SCHEMES:
            raise AdvrecError(f"model.scheme={scheme!r}: choose one of {SCHEMES}")
        if rows not in ("users", "items"):
            raise AdvrecError(f"model.rows={rows!r}: choose users or items")
        if negatives not in NEGATIVES:
            raise AdvrecError(f"model.negatives={negatives!r}: choose one of {NEGATIVES}")
        self._check_condition(condition, rows, n_features)
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.rows = rows
        self.uses_features = condition != "history"
        n = n_items if rows == "users" else n_users  # length of one row vector
        c = {"history": n, "history+features": n + n_features, "features": n_features}[condition]
        self.generator = mlp([c + noise_dim, *g_hidden, n], g_act, g_out_act)
        self.discriminator = mlp([c + n, *d_hidden, 1], d_act, "none")
        self._all_scores: torch.Tensor | None = None
        self._epoch_masks: dict[int, torch.Tensor] = {}  # salt -> (rows, n) bool, this epoch
        self._sums: dict[str, list] = {}  # epoch statistics, summed on the device

    @staticmethod
    def _check_condition(condition: str, rows: str, n_features: int) -> None:
        if condition not in CONDITIONS:
            raise AdvrecError(f"model.condition={condition!r}: choose one of {CONDITIONS}")
        if condition == "history":
            return
        if rows != "users":
            raise AdvrecError(
                f"model.condition={condition} conditions users on their features; "
                "set model.rows=users"
            )
        if n_features == 0:
            raise AdvrecError(
                f"model.condition={condition} needs user features, and the data has none "
                "configured: set data.features.categorical / numeric (and data.features.path "
                "for a CSV keyed by user id)"
            )

    def condition_of(self, x: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
        """c for rows `x` (dense vectors) and their encoded `features`."""
        kind = self.hparams.condition
        if kind == "history":
            return x
        if features is None:
            raise AdvrecError(f"model.condition={kind}: the batch carries no user features")
        f = features.to(x.dtype)
        return f if kind == "features" else torch.cat([x, f], 1)

    # -- schedule and optimisers -----------------------------------------------------------
    @property
    def schedule(self) -> list:
        h = self.hparams
        d_passes = h.d_steps if h.adversarial else 0
        return [("D", h.batch_size_d, d_passes), ("G", h.batch_size_g, h.g_steps)]

    def configure_optimizers(self):
        h = self.hparams
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=h.lr_g)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=h.lr_d)
        return [opt_g, opt_d]

    def on_before_optimizer_step(self, optimizer) -> None:
        # called after the AMP scaler unscaled the gradients, so the threshold is in real units
        if self.hparams.grad_clip:
            self.clip_gradients(optimizer, gradient_clip_val=self.hparams.grad_clip)

    # -- the two steps ---------------------------------------------------------------------
    def generate(self, cond: torch.Tensor) -> torch.Tensor:
        if self.hparams.noise_dim:
            z = torch.randn if self.training else torch.zeros
            noise = z(len(cond), self.hparams.noise_dim, device=cond.device, dtype=cond.dtype)
            cond = torch.cat([cond, noise], 1)
        return self.generator(cond)

    def _sample(self, rows: torch.Tensor, x: torch.Tensor, percent: float, salt: int):
        cached = self._epoch_masks.get(salt)
        if cached is not None:
            return cached[rows]
        h = self.hparams
        salt = sample_salt(salt, h.negatives)
        return negative_sample(rows, x, percent, h.seed, self.current_epoch, salt)

    def fake_mask(self, rows: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """e (+ k under PM/ZP): the entries of G's output that D gets to see."""
        if self.hparams.scheme == "ZR":
            return x
        return x + self._sample(rows, x, self.hparams.s_pm, PM).to(x.dtype)

    def zr_mask(self, rows: torch.Tensor, x: torch.Tensor) -> torch.Tensor | None:
        """Indicator of N^ZR (None under PM)."""
        if self.hparams.scheme == "PM":
            return None
        return self._sample(rows, x, self.hparams.s_zr, ZR).to(x.dtype)

    def on_train_epoch_start(self) -> None:
        """Draw this epoch's N^ZR / N^PM for every row at once when they fit in memory
        (the same hash-defined samples as the per-batch path, just sorted in bulk)."""
        self._epoch_masks = {}
        m = self.trainer.datamodule.fit_rows_matrix()
        if m.shape[0] * m.shape[1] <= self.hparams.mask_cache_entries:
            self._epoch_masks = epoch_masks(m, self.hparams, self.current_epoch, self.device)

    def _track(self, n: int, **values: torch.Tensor) -> None:
        """Accumulate epoch means on the device; logging per step would sync every step."""
        for k, v in values.items():
            acc = self._sums.setdefault(k, [0.0, 0])
            acc[0] = acc[0] + v.detach().float() * n
            acc[1] += n

    def running_losses(self) -> dict[str, torch.Tensor]:
        return {k: total / max(n, 1) for k, (total, n) in self._sums.items()}

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        for k, (total, n) in self._sums.items():
            self.log(f"train/{k}", total / max(n, 1), sync_dist=True, prog_bar=k == "g_loss")
        self._sums = {}
        self._epoch_masks = {}
        self.log("train/topk_in_condition", self.identity_share(), sync_dist=True)

    @torch.no_grad()
    def identity_share(self, max_rows: int = 4096) -> torch.Tensor:
        """Share of G's top-`collapse_k` entries that the condition already holds.

        Near 1, G reproduces its input (the identity collapse ECIR 2022 warns about) and
        recommends nothing new once the known items are masked. Measured on up to
        `max_rows` evenly spaced training rows, once per epoch.
        """
        m = self.trainer.datamodule.fit_rows_matrix()
        rows = torch.linspace(0, m.shape[0] - 1, min(max_rows, m.shape[0])).long()
        x = dense_rows(m, rows.numpy()).to(self.device)
        feats = self.trainer.datamodule.user_features if self.uses_features else None
        cond = self.condition_of(x, None if feats is None else feats[rows].to(self.device))
        was_training = self.training
        self.eval()
        top = self.generate(cond).topk(min(self.hparams.collapse_k, x.shape[1]), dim=1).indices
        self.train(was_training)
        return x.gather(1, top).gt(0).float().mean()

    def training_step(self, batch: dict, batch_idx: int) -> None:
        x, rows = batch["x"], batch["rows"]
        cond = self.condition_of(x, batch.get("features"))
        opt_g, opt_d = self.optimizers()
        if batch["phase"] == D_PHASE:
            self._d_step(x, cond, self.fake_mask(rows, x), opt_d)
        else:
            self._g_step(x, cond, self.fake_mask(rows, x), self.zr_mask(rows, x), opt_g)

    def _d_step(self, x, cond, fake_mask, opt_d) -> None:
        h = self.hparams

        def loss_fn():
            with torch.no_grad():
                fake = self.generate(cond) * fake_mask
            d_real = self.discriminator(torch.cat([cond, x], 1))
            d_fake = self.discriminator(torch.cat([cond, fake], 1))
            loss = (
                F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
                + h.reg_d * l2(self.discriminator)
            )
            return loss, {
                "D_real": torch.sigmoid(d_real).mean(),
                "D_fake": torch.sigmoid(d_fake).mean(),
            }

        loss, stats = self.manual_step(opt_d, loss_fn)
        self._track(len(x), d_loss=loss, **stats)

    def _g_step(self, x, cond, fake_mask, zr_mask, opt_g) -> None:
        h = self.hparams

        def loss_fn():
            g = self.generate(cond)
            zr = (g.pow(2) * zr_mask).sum(1).mean() if zr_mask is not None else g.new_zeros(())
            if h.adversarial:
                d_fake = self.discriminator(torch.cat([cond, g * fake_mask], 1))
                fit = F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))
            else:  # ablation: G alone learns to reproduce the masked entries (1 on e, 0 on k)
                fit = ((g - x).pow(2) * fake_mask).sum(1).mean()
            return fit + h.reg_g * l2(self.generator) + h.alpha * zr, {"zr_penalty": zr}

        loss, stats = self.manual_step(opt_g, loss_fn)
        self._track(len(x), g_loss=loss, **stats)

    # -- scoring ---------------------------------------------------------------------------
    @torch.no_grad()
    def prepare_scoring(self, history: sp.csr_matrix) -> None:
        """Item-based: generate every item's row once from `history`, transpose, cache."""
        self._all_scores = None
        if self.rows == "users":
            return
        cols = history.T.tocsr()  # items x users
        out = torch.empty(self.n_users, self.n_items, device=self.device)
        for lo in range(0, self.n_items, 1024):
            idx = torch.arange(lo, min(lo + 1024, self.n_items))
            cond = dense_rows(cols, idx.numpy()).to(self.device)
            out[:, lo : lo + len(idx)] = self.generate(cond).float().T
        self._all_scores = out

    def score_batch(self, batch: dict) -> torch.Tensor:
        if self.rows == "users":
            return self.generate(self.condition_of(batch["history"], batch.get("features")))
        return self.score(batch["users"], batch["history"])

    def score(self, users: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        if self.rows == "users":
            return self.generate(self.condition_of(history, None))
        if self._all_scores is None:
            raise RuntimeError("call prepare_scoring(history) before scoring an item-based CFGAN")
        return self._all_scores[users]
