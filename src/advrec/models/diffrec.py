"""DiffRec (Wang et al., SIGIR 2023): a diffusion recommender, the generative baseline, as in
the released code (YiyanXu/DiffRec, DiffRec/: models/gaussian_diffusion.py, models/DNN.py).

Forward process: a user's vector x_0 is noised for t of `steps` steps,
x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, with betas from `noise_schedule` scaled by
`noise_scale` between `noise_min` and `noise_max` (small: the user's history must survive).
An MLP denoiser with a sinusoidal step embedding predicts x_0 (`mean_type=x0`) or eps, trained
by the per-user mean squared error; `reweight` weights step t by SNR(t-1) - SNR(t) (x0);
t is drawn uniformly until every step has 10 losses on record, then by importance sampling
(as released, whatever `reweight` says). Scores: the reverse
process from x_{T'} (T' = `sampling_steps`; 0 starts from the history itself) through every
step, taking the posterior mean (no sampling noise), as the released inference does.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from advrec.errors import AdvrecError, Incompatible
from advrec.models.base import Recommender

SCHEDULES = ("linear", "linear-var", "cosine", "binomial")
MEAN_TYPES = ("x0", "eps")
HISTORY = 10  # losses kept per step for importance sampling
UNIFORM_SHARE = 0.001  # of the importance-sampling distribution spread uniformly


def betas_of(schedule: str, steps: int, scale: float, low: float, high: float) -> np.ndarray:
    """The noise schedule's betas (float64); the first is fixed to 1e-5, as released."""
    if schedule in ("linear", "linear-var"):
        betas = np.linspace(scale * low, scale * high, steps, dtype=np.float64)
        if schedule == "linear-var":  # the linspace is 1 - abar_t: betas from its ratios
            abar = 1 - betas
            betas = np.concatenate([[1 - abar[0]], np.minimum(1 - abar[1:] / abar[:-1], 0.999)])
    elif schedule == "cosine":
        f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        betas = np.array([min(1 - f((i + 1) / steps) / f(i / steps), 0.999) for i in range(steps)])
    else:  # binomial
        betas = np.array([1 / (steps - t + 1) for t in range(steps)], dtype=np.float64)
    betas = betas.astype(np.float64)
    betas[0] = 1e-5
    if not ((betas > 0) & (betas <= 1)).all():
        raise Incompatible(
            f"model.noise_scale={scale}, noise_min={low}, noise_max={high} give betas outside "
            "(0, 1]: noise_min must be below noise_max, and noise_scale x noise_max small"
        )
    return betas


def step_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embeddings (cos, sin) of the steps `t`: (len(t), dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


class Denoiser(nn.Module):
    """The released DNN: [x ; step embedding] -> tanh layers `hidden` reversed -> back out to
    n_items (tanh between, none at the end), dropout on x; weights N(0, 2 / (fan_in +
    fan_out)), biases N(0, .001)."""

    def __init__(self, n: int, hidden: list[int], emb_size: int, dropout: float, norm: bool):
        super().__init__()
        self.emb_size, self.norm = emb_size, norm
        self.emb = nn.Linear(emb_size, emb_size)
        down = [n + emb_size, *reversed(hidden)]
        up = [*hidden, n]
        self.down = nn.ModuleList(nn.Linear(a, b) for a, b in zip(down[:-1], down[1:], strict=True))
        self.up = nn.ModuleList(nn.Linear(a, b) for a, b in zip(up[:-1], up[1:], strict=True))
        self.dropout = dropout
        for layer in [*self.down, *self.up, self.emb]:
            out_f, in_f = layer.weight.shape
            nn.init.normal_(layer.weight, 0.0, math.sqrt(2.0 / (in_f + out_f)))
            nn.init.normal_(layer.bias, 0.0, 0.001)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Dropout (in training) draws from `generator`, so a step's mask is reproducible."""
        emb = self.emb(step_embedding(t, self.emb_size).to(x.dtype))
        h = F.normalize(x) if self.norm else x
        if self.training and self.dropout > 0:
            keep = torch.rand(h.shape, generator=generator, device=h.device) >= self.dropout
            h = h * keep / (1 - self.dropout)
        h = torch.cat([h, emb], dim=-1)
        for layer in self.down:
            h = torch.tanh(layer(h))
        for i, layer in enumerate(self.up):
            h = layer(h)
            if i < len(self.up) - 1:
                h = torch.tanh(h)
        return h


class DiffRec(Recommender):
    """See the module docstring. Defaults: the released `main.py`; the released best on
    ML-1M (clean) is hidden [200, 600], steps 40, noise_scale .005, noise_min .005,
    noise_max .01, lr 1e-3, reweight on."""

    reads_history = True

    limits = {
        "steps": ("an integer >= 1", lambda v: v >= 1),
        "sampling_steps": ("an integer >= 0", lambda v: v >= 0),
        "noise_scale": ("a number >= 0", lambda v: v >= 0),
    }

    def __init__(
        self,
        n_users: int,
        n_items: int,
        hidden: tuple = (1000,),
        emb_size: int = 10,
        dropout: float = 0.5,
        norm: bool = False,
        mean_type: str = "x0",
        steps: int = 100,
        noise_schedule: str = "linear-var",
        noise_scale: float = 0.1,
        noise_min: float = 1e-4,
        noise_max: float = 0.02,
        sampling_steps: int = 0,
        reweight: bool = True,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        batch_size: int = 400,
        seed: int = 0,
        ks: tuple = (5, 10, 20),
    ):
        super().__init__(n_users, n_items, ks)
        for name, value, choices in (
            ("mean_type", mean_type, MEAN_TYPES),
            ("noise_schedule", noise_schedule, SCHEDULES),
        ):
            if value not in choices:
                raise AdvrecError(f"model.{name}={value!r}: choose one of {choices}")
        self.save_hyperparameters()
        self.check_limits()
        if sampling_steps > steps:
            raise AdvrecError(
                f"model.sampling_steps={sampling_steps} exceeds model.steps={steps}: "
                "the reverse process starts at most from the last step"
            )
        self.denoiser = Denoiser(n_items, list(hidden), emb_size, dropout, norm)
        if noise_scale > 0:
            betas = torch.from_numpy(
                betas_of(noise_schedule, steps, noise_scale, noise_min, noise_max)
            )
            abar = torch.cumprod(1 - betas, 0)
            abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
            for name, value in {
                "betas": betas,
                "abar": abar,
                "abar_prev": abar_prev,
                "coef_x0": betas * abar_prev.sqrt() / (1 - abar),  # posterior mean's x_0 term
                "coef_xt": (1 - abar_prev) * (1 - betas).sqrt() / (1 - abar),  # and x_t's
            }.items():
                self.register_buffer(name, value, persistent=False)
        # importance sampling's record (in checkpoints, so a resumed run draws the same steps)
        self.register_buffer("loss_history", torch.zeros(steps, HISTORY, dtype=torch.float64))
        self.register_buffer("loss_count", torch.zeros(steps, dtype=torch.long))

    def configure_optimizers(self):
        h = self.hparams
        return torch.optim.AdamW(self.parameters(), lr=h.lr, weight_decay=h.weight_decay)

    # -- the forward process -----------------------------------------------------------------
    def _at(self, values: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return values[t].float()[:, None]

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        abar = self._at(self.abar, t)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def x0_from_eps(self, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        abar = self._at(self.abar, t)
        return (1 / abar).sqrt() * xt - (1 / abar - 1).sqrt() * eps

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        return self.abar[t] / (1 - self.abar[t])

    def step_generator(self) -> torch.Generator:
        """This update's random numbers (steps, noise, dropout): a function of the seed, the
        update and the process, so a resumed run draws what an uninterrupted one draws."""
        key = (self.hparams.seed * 1_000_003 + self.global_step) * 1_009 + self.global_rank
        return torch.Generator(self.device).manual_seed(key)

    def sample_steps(
        self, n: int, device, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Steps for `n` rows and their probability x steps: uniform until every step has
        HISTORY losses on record, then by the root mean square of those losses."""
        steps = self.hparams.steps
        if not bool((self.loss_count == HISTORY).all()):
            t = torch.randint(0, steps, (n,), device=device, generator=generator)
            return t, torch.ones(n, device=device)
        p = self.loss_history.pow(2).mean(-1).sqrt()
        p = p / p.sum() * (1 - UNIFORM_SHARE) + UNIFORM_SHARE / steps
        t = torch.multinomial(p, n, replacement=True, generator=generator)
        return t, (p[t] * steps).float()

    @torch.no_grad()
    def record(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Append each row's loss to its step's record (the last HISTORY kept), in batch
        order, as the released per-row loop does."""
        for step in t.unique().tolist():
            new = losses[t == step].double()
            count = int(self.loss_count[step])
            kept = torch.cat([self.loss_history[step, :count], new])[-HISTORY:]
            self.loss_history[step, : len(kept)] = kept
            self.loss_count[step] = len(kept)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        h, x0 = self.hparams, batch["x"]
        g = self.step_generator()
        t, pt = self.sample_steps(len(x0), x0.device, g)
        noise = torch.randn(x0.shape, generator=g, device=x0.device, dtype=x0.dtype)
        xt = self.q_sample(x0, t, noise) if h.noise_scale > 0 else x0
        out = self.denoiser(xt, t, g)
        target = x0 if h.mean_type == "x0" else noise
        mse = (target - out).pow(2).mean(1)
        if h.reweight and h.noise_scale > 0:
            if h.mean_type == "x0":
                weight = torch.where(t == 0, 1.0, self.snr((t - 1).clamp(min=0)) - self.snr(t))
                loss = mse
            else:
                weight = (1 - self.abar[t]) / ((1 - self.abar_prev[t]) ** 2 * (1 - self.betas[t]))
                weight = torch.where(t == 0, 1.0, weight)
                x0_hat = self.x0_from_eps(xt, t, out)
                loss = torch.where(t == 0, (x0 - x0_hat).pow(2).mean(1) / 2, mse)
            loss = weight.float() * loss
        else:
            loss = mse
        self.record(t, loss.detach())
        loss = (loss / pt).mean()
        self.log("train/loss", loss.detach(), on_step=False, on_epoch=True, batch_size=len(x0))
        return loss

    # -- the reverse process -----------------------------------------------------------------
    @torch.no_grad()
    def denoise(self, x: torch.Tensor) -> torch.Tensor:
        """The released `p_sample` without sampling noise: from x_{T'} through every step."""
        h = self.hparams
        n = len(x)
        if h.sampling_steps > 0:
            t = torch.full((n,), h.sampling_steps - 1, device=x.device, dtype=torch.long)
            x = self.q_sample(x, t, torch.randn_like(x))
        for i in reversed(range(h.steps)):
            t = torch.full((n,), i, device=x.device, dtype=torch.long)
            out = self.denoiser(x, t)
            if h.noise_scale == 0:
                x = out
                continue
            x0 = out if h.mean_type == "x0" else self.x0_from_eps(x, t, out)
            x = self._at(self.coef_x0, t) * x0 + self._at(self.coef_xt, t) * x
        return x

    def score(self, users: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        return self.denoise(history)
