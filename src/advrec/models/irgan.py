"""IRGAN for item recommendation (Wang et al., SIGIR 2017), every known deviation of the
released code from the paper a visible option.

G: a softmax policy over all items from biased MF scores. D: a biased MF logit trained with
pointwise BCE, the user's positives against items drawn from G at `temperature` (redrawn
every `resample_every` D passes). G: REINFORCE on D's reward, `reward=sigmoid_centered`
(2 (sigma(f) - 0.5), the released code) or `softplus` (log(1 + e^f), the paper), with the
released importance sampling: draws from (1 - lambda) p_G + lambda * uniform(user's
positives), weighted by p_G / p_n. Probabilities in float64, renormalised.

One epoch = one round: `d_epochs` passes of D over all users, then `g_epochs` passes of G.
Steps cover a batch of users; their gradients are those of the released SGD steps summed:
D: the released `dis_model.py` minimises a per-example loss *vector* (BCE of each example
plus the batch's L2 term broadcast to every example), and TensorFlow differentiates its sum,
so a step descends sum_i bce_i + `d_batch` * reg_d * l2(batch) with `d_batch` = 32 examples
per released batch. G: sum over users of each user's mean REINFORCE term (one released step
per user).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from advrec.data.batches import FitData, Phase
from advrec.errors import AdvrecError, Diverged
from advrec.models.gan import GANRecommender
from advrec.models.nets import MF
from advrec.models.samplers import positive_pairs, rank_within_rows
from advrec.utils.io import read_checkpoint

REWARDS = ("sigmoid_centered", "softplus")


def mixed_policy(logits: torch.Tensor, x: torch.Tensor, lam: float):
    """(p, p_n) in float64: G's softmax and its mix with uniform over each row's positives."""
    p = torch.softmax(logits.double(), dim=1)
    n_pos = x.sum(1, keepdim=True).double()
    pos = torch.where(n_pos > 0, x.double() / n_pos.clamp(min=1), torch.zeros_like(p))
    pn = (1 - lam) * p + lam * pos
    pn = torch.where(n_pos > 0, pn, p)  # no positives: plain p
    return p, pn / pn.sum(1, keepdim=True)


def draw(p: torch.Tensor, n: int) -> torch.Tensor:
    """`n` items per row from the policy `p`; a policy that is no longer finite (G diverged,
    e.g. a large lr_g at a low temperature) ends the run as diverged, not as a crash."""
    if not torch.isfinite(p).all():
        raise Diverged(
            "IRGAN's generator diverged: its sampling probabilities are not finite (lower "
            "model.lr_g or raise model.temperature)"
        )
    return torch.multinomial(p, n, replacement=True)


def reinforce_loss(
    logits: torch.Tensor, draws: torch.Tensor, weight: torch.Tensor, m: torch.Tensor
) -> torch.Tensor:
    """-sum over users of mean_s log p(draw_s) * weight_s (REINFORCE; weight has no grad)."""
    logp = torch.log_softmax(logits, 1).gather(1, draws)
    return -((logp * weight).sum(1) / m).sum()


def reward_of(logits: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "sigmoid_centered":
        return 2 * (torch.sigmoid(logits) - 0.5)
    return F.softplus(logits)


class IRGAN(GANRecommender):
    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int = 5,
        init: float = 0.05,
        optimizer: str = "sgd",
        lr_g: float = 1e-3,
        lr_d: float = 1e-3,
        reg_g: float = 0.0,
        reg_d: float = 0.1 / 16,
        d_epochs: int = 100,
        g_epochs: int = 50,
        resample_every: int = 5,
        temperature: float = 0.2,
        sample_lambda: float = 0.2,
        g_samples_per_positive: int = 2,
        reward: str = "sigmoid_centered",
        d_batch: int = 32,
        batch_size: int = 64,
        init_ckpt: str | None = None,
        init_d: bool = False,
        ks: tuple = (5, 10, 20),
    ):
        super().__init__(n_users, n_items, ks)
        if reward not in REWARDS:
            raise AdvrecError(f"model.reward={reward!r}: choose one of {REWARDS}")
        self.save_hyperparameters()
        self.generator = MF(n_users, n_items, dim, init)
        self.discriminator = MF(n_users, n_items, dim, init)
        self._d_neg: torch.Tensor | None = None  # G's samples for D, aligned with train CSR
        self._d_key: tuple | None = None
        self._train = None  # the training matrix (users x items) of the running fit
        self._indptr: torch.Tensor | None = None

    def setup(self, stage: str) -> None:
        """Start G (and D) from `init_ckpt` when training begins. Not in `__init__`: a trained
        IRGAN's checkpoint holds its own weights and must load once the BPR file is gone; a
        resumed fit restores its checkpoint after this hook."""
        if stage == "fit" and self.hparams.init_ckpt:
            self.load_pretrained(self.hparams.init_ckpt, into_d=self.hparams.init_d)

    def load_pretrained(self, path: str, into_d: bool = False) -> None:
        """Copy a BPR checkpoint's MF weights into G (and D)."""
        if not Path(path).is_file():
            raise AdvrecError(
                f"model.init_ckpt={path} not found; train one with "
                "advrec-train experiment=bpr_dns_irgan_pretrain"
            )
        raw = read_checkpoint(Path(path))
        state = raw.get("state_dict", {}) if isinstance(raw, dict) else {}
        mf = {k.removeprefix("mf."): v for k, v in state.items() if k.startswith("mf.")}
        if not mf:
            raise AdvrecError(f"{path} holds no BPR matrix factorisation (mf.*) weights")
        for net in [self.generator] + ([self.discriminator] if into_d else []):
            if mf["user"].shape != net.user.shape or mf["item"].shape != net.item.shape:
                raise AdvrecError(
                    f"{path}: embedding shapes {tuple(mf['user'].shape)} / "
                    f"{tuple(mf['item'].shape)} do not match this IRGAN "
                    f"({tuple(net.user.shape)} / {tuple(net.item.shape)}); use the same data "
                    "and model.dim as the BPR run"
                )
            net.load_state_dict(mf)

    def phases(self) -> tuple[Phase, ...]:
        h = self.hparams
        return (Phase("D", h.batch_size, h.d_epochs), Phase("G", h.batch_size, h.g_epochs))

    def prepare_fit(self, data: FitData) -> None:
        self._train = data.train
        self._indptr = torch.as_tensor(data.train.indptr, device=self.device)
        self._d_key = None

    # -- D -----------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_for_d(self) -> torch.Tensor:
        """For every training positive (CSR order), one item drawn from G at `temperature`."""
        m = self._train
        counts = torch.from_numpy(m.indptr[1:] - m.indptr[:-1]).to(self.device)
        out = torch.empty(m.nnz, dtype=torch.long, device=self.device)
        for lo in range(0, m.shape[0], 1024):
            users = torch.arange(lo, min(lo + 1024, m.shape[0]), device=self.device)
            c = counts[users]
            if int(c.max()) == 0:
                continue
            p = torch.softmax(self.generator(users).double() / self.hparams.temperature, 1)
            draws = draw(p, int(c.max()))
            keep = torch.arange(draws.shape[1], device=self.device)[None, :] < c[:, None]
            out[int(m.indptr[lo]) : int(m.indptr[lo + len(users)])] = draws[keep]
        return out

    def d_loss(self, batch: dict):
        h, users, d = self.hparams, batch["ids"], self.discriminator
        key = (self.current_epoch, batch["pass"] // h.resample_every)
        if key != self._d_key:
            self._d_neg, self._d_key = self.sample_for_d(), key
        at, pos = positive_pairs(batch["x"])
        if len(at) == 0:
            return None
        neg = self._d_neg[self._indptr[users][at] + rank_within_rows(at, len(users))]
        u = users[at]
        lp, ln = d.pair(u, pos), d.pair(u, neg)
        bce = F.binary_cross_entropy_with_logits
        loss = (
            bce(lp, torch.ones_like(lp), reduction="sum")
            + bce(ln, torch.zeros_like(ln), reduction="sum")
            + h.d_batch * h.reg_d * (d.l2(u, pos) + d.l2(u, neg))
        )
        stats = {  # D's mean probability on observed pairs and on G's samples
            "d_loss": loss.detach() / len(at),  # per example
            "D_real": torch.sigmoid(lp.detach()).mean(),
            "D_fake": torch.sigmoid(ln.detach()).mean(),
        }
        return loss, stats

    # -- G -----------------------------------------------------------------------------------
    def g_loss(self, batch: dict):
        h, users, x = self.hparams, batch["ids"], batch["x"]
        n_pos = x.sum(1)
        keep = n_pos > 0
        users, x, n_pos = users[keep], x[keep], n_pos[keep]
        if len(users) == 0:
            return None
        with torch.no_grad():
            p, pn = mixed_policy(self.generator(users), x, h.sample_lambda)
            m = (h.g_samples_per_positive * n_pos).long()
            draws = draw(pn, int(m.max()))
            valid = torch.arange(draws.shape[1], device=self.device)[None, :] < m[:, None]
            r = reward_of(self.discriminator.pair(users, draws), h.reward)
            weight = r * (p.gather(1, draws) / pn.gather(1, draws)).float() * valid
        loss = reinforce_loss(self.generator(users), draws, weight, m)
        if h.reg_g:
            loss = loss + h.reg_g * self.generator.l2(users, draws[valid])
        return loss, {
            "g_loss": loss.detach() / len(users),
            "reward": (r * valid).sum() / valid.sum(),
        }

    def score(self, users: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        return self.generator(users)
