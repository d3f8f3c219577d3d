"""advrec's training epoch against a plain PyTorch loop of the same math (CFGAN iZP, ML100K).

The plain loop is what a careful PyTorch user writes: the training matrix is one dense tensor
made once; each epoch draws N^ZR / N^PM for every row at once and its batch orders up front;
a step is index, forward, backward, Adam; the losses are summed on the device and read once
per epoch. It draws what advrec draws (the same hashed negative samples and the same seeded
shuffles), starts from the same weights and so must give the same epoch losses: the JSON says
how far apart they are. advrec runs through a real `Trainer` with the run's callbacks
(`callbacks=default` as `advrec-train` builds them, or none), validation off, no logger.

    ADVREC_DATA_DIR=../shared/datasets python bench/train_overhead.py [--epochs 5] [--rounds 3]
    ... --profile      # where an advrec epoch's time goes (cProfile, by component)

Each advrec epoch is followed by a plain epoch in the same process (the machine's speed
drifts by tens of percent over minutes). Prints JSON: per round the median seconds per epoch
of each (wall and CPU time), the largest difference of their epoch losses, and the medians
over rounds with their ratio.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from advrec.data.datamodule import RecDataModule
from advrec.data.sources import Predefined
from advrec.models.cfgan import CFGAN, ZR
from advrec.models.nets import l2
from advrec.models.samplers import negative_sample

# the released iZP settings (conf/experiment/cfgan_ml100k_paper.yaml)
PAPER = dict(
    rows="items",
    scheme="ZP",
    s_zr=70,
    s_pm=70,
    negatives="shared",
    alpha=0.03,
    g_hidden=[400],
    d_hidden=[125],
    reg_g=1e-3,
    reg_d=0.0,
    lr_g=1e-4,
    lr_d=1e-4,
    batch_size_g=32,
    batch_size_d=64,
    g_steps=4,
    d_steps=2,
)


def datamodule(data_dir: Path) -> RecDataModule:
    base = data_dir / "cfgan-splits" / "ML100K" / "ML100K."
    dm = RecDataModule(Predefined(f"{base}train", f"{base}test"), {"method": "predefined"})
    dm.setup()
    return dm


def orders(n: int, seed: int, epoch: int, phases) -> list[tuple[str, int, torch.Tensor]]:
    """(phase, batch size, row order) of each pass of an epoch: the seeded shuffles advrec's
    phased sampler draws (seed, epoch, phase, pass)."""
    out = []
    for k, (name, size, passes) in enumerate(phases):
        for p in range(passes):
            seq = np.random.SeedSequence([seed, epoch, k, p])
            g = torch.Generator().manual_seed(int(seq.generate_state(1)[0]))
            out.append((name, size, torch.randperm(n, generator=g)))
    return out


def clock() -> tuple[float, float]:
    """(wall, CPU) seconds: on a shared VM the wall clock also counts stolen time; the CPU
    time of this process (every thread) does not."""
    return time.perf_counter(), time.process_time()


class PlainLoop:
    """The same training written as plain PyTorch; `epoch(e)` trains one epoch and returns
    its mean losses {d_loss, g_loss}."""

    def __init__(self, model: CFGAN, x: torch.Tensor, seed: int):
        h = self.h = model.hparams
        self.gen, self.disc, self.x, self.seed = model.generator, model.discriminator, x, seed
        self.opt_g = torch.optim.Adam(self.gen.parameters(), lr=h.lr_g)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=h.lr_d)
        self.ids = torch.arange(len(x))
        self.phases = [("D", h.batch_size_d, h.d_steps), ("G", h.batch_size_g, h.g_steps)]

    def epoch(self, epoch: int) -> dict[str, float]:
        h, gen, disc, x = self.h, self.gen, self.disc, self.x
        # shared negatives at S_zr = S_pm: one sample is both N^ZR and N^PM
        neg = negative_sample(self.ids, x, h.s_pm, h.seed, epoch, ZR).to(x.dtype)
        sums = {"D": torch.zeros(()), "G": torch.zeros(())}
        counts = {"D": 0, "G": 0}
        for phase, size, order in orders(len(x), self.seed, epoch, self.phases):
            for lo in range(0, len(x), size):
                rows = order[lo : lo + size]
                xb, nb = x[rows], neg[rows]
                if phase == "D":
                    with torch.no_grad():
                        fake = gen(xb) * (xb + nb)
                    real_logit = disc(torch.cat([xb, xb], 1))
                    fake_logit = disc(torch.cat([xb, fake], 1))
                    loss = (
                        F.binary_cross_entropy_with_logits(real_logit, torch.ones_like(real_logit))
                        + F.binary_cross_entropy_with_logits(
                            fake_logit, torch.zeros_like(fake_logit)
                        )
                        + h.reg_d * l2(disc)
                    )
                    opt = self.opt_d
                else:
                    disc.requires_grad_(False)  # G's loss needs no gradient of D's weights
                    out = gen(xb)
                    logit = disc(torch.cat([xb, out * (xb + nb)], 1))
                    loss = (
                        F.binary_cross_entropy_with_logits(logit, torch.ones_like(logit))
                        + h.reg_g * l2(gen)
                        + h.alpha * (out.pow(2) * nb).sum(1).mean()
                    )
                    disc.requires_grad_(True)
                    opt = self.opt_g
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sums[phase] += loss.detach() * len(rows)
                counts[phase] += len(rows)
        return {f"{p.lower()}_loss": float(sums[p] / counts[p]) for p in sums}


class Interleaved:
    """Lightning callback: after each advrec epoch, one plain-loop epoch (same epoch number),
    so both are timed in the same minute of a machine whose speed drifts. An advrec epoch is
    timed from its start to the next one's (or the end of training), every hook included,
    less the plain epoch run in between."""

    def __init__(self, plain: PlainLoop):
        from lightning import Callback

        me = self
        self.plain, self.stamps, self.inside = plain, [], []
        self.advrec_losses, self.plain_losses, self.plain_times = [], [], []

        class _Cb(Callback):
            def on_train_epoch_start(self, trainer, pl_module):
                me.stamps.append(clock())

            def on_train_epoch_end(self, trainer, pl_module):
                # callbacks run before the module's own hook, which logs and resets the sums
                running = pl_module.running_losses()
                me.advrec_losses.append({k: float(running[k]) for k in ("d_loss", "g_loss")})
                t = clock()
                me.plain_losses.append(me.plain.epoch(trainer.current_epoch))
                me.plain_times.append(_minus(clock(), t))

            def on_train_end(self, trainer, pl_module):
                me.stamps.append(clock())

        self.callback = _Cb()

    def advrec_times(self) -> list[tuple[float, float]]:
        spans = [_minus(b, a) for a, b in zip(self.stamps, self.stamps[1:], strict=False)]
        return [_minus(s, p) for s, p in zip(spans, self.plain_times, strict=True)]


def _minus(a: tuple, b: tuple) -> tuple:
    return tuple(x - y for x, y in zip(a, b, strict=True))


def advrec_run(dm, epochs: int, seed: int, callbacks: str, out: Path, extra=(), profile=None):
    """`epochs` of advrec's CFGAN through a Trainer as `advrec-train` builds it (callbacks,
    atomic checkpoints, divergence guard), validation and loggers off."""
    from hydra import compose, initialize_config_dir

    from advrec.config import CONF_DIR
    from advrec.run.build import build_trainer

    torch.manual_seed(seed)
    model = CFGAN(dm.n_users, dm.n_items, seed=seed, **PAPER)
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            [
                "model=cfgan",
                "data=cfgan_ml100k",
                f"callbacks={callbacks}",
                "logger=[]",
                f"paths.output_dir={out}",
                "protocol=original",
            ],
        )
    trainer = build_trainer(
        cfg,
        max_epochs=epochs,
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(extra),
    )
    if profile is not None:
        profile.enable()
    trainer.fit(model, datamodule=dm)
    if profile is not None:
        profile.disable()


GROUPS = (  # cProfile's files, by what they are
    ("lightning", ("lightning/", "lightning_fabric/", "torchmetrics/")),
    ("advrec data (sampler, collate)", ("advrec/data/",)),
    ("advrec model + GAN layer", ("advrec/models/",)),
    ("advrec callbacks", ("advrec/utils/",)),
    ("torch optimizer", ("torch/optim/",)),
    ("torch autograd (backward)", ("torch/autograd/", "torch/_tensor.py")),
    ("torch nn (forward)", ("torch/nn/",)),
    ("scipy", ("scipy/",)),
)


def by_component(prof: cProfile.Profile, epochs: int) -> dict[str, float]:
    """Self time (ms per epoch) grouped by the package a function lives in."""
    stats = pstats.Stats(prof)
    out: dict[str, float] = {}
    for (file, _, _), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        name = next((g for g, keys in GROUPS if any(k in file for k in keys)), None)
        if name is None:
            name = "torch C ops" if file == "~" else "other Python"
        out[name] = out.get(name, 0.0) + tottime * 1000 / epochs
    return dict(sorted(((k, round(v, 1)) for k, v in out.items()), key=lambda kv: -kv[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3, help="alternating runs of each loop")
    ap.add_argument("--callbacks", default="default", help="default (as advrec-train) or none")
    ap.add_argument("--profile", action="store_true", help="cProfile one advrec run instead")
    ap.add_argument("--data-dir", default=os.environ.get("ADVREC_DATA_DIR", "data"))
    a = ap.parse_args()
    dm = datamodule(Path(a.data_dir))
    seed = 0
    with tempfile.TemporaryDirectory() as tmp:
        if a.profile:
            prof = cProfile.Profile()
            t = clock()
            advrec_run(dm, a.epochs, seed, a.callbacks, Path(tmp), profile=prof)
            wall = round(1000 * (clock()[0] - t[0]) / a.epochs, 1)
            ms = by_component(prof, a.epochs)
            print(json.dumps({"ms_per_epoch": wall, "self_ms_by_component": ms}, indent=2))
            return
        x = torch.from_numpy(dm.fit_rows_matrix("items").toarray().astype(np.float32))
        rounds = []
        for r in range(a.rounds):
            torch.manual_seed(seed)
            plain = PlainLoop(CFGAN(dm.n_users, dm.n_items, seed=seed, **PAPER), x, seed)
            both = Interleaved(plain)
            advrec_run(dm, a.epochs, seed, a.callbacks, Path(tmp) / str(r), [both.callback])
            fw_t, pl_t = both.advrec_times(), both.plain_times
            pairs = zip(both.advrec_losses, both.plain_losses, strict=True)
            diff = max(abs(f[k] - p[k]) for f, p in pairs for k in f)
            rounds.append(
                {
                    **{f"advrec_{k}_s_per_epoch": _median(fw_t, i) for i, k in enumerate(KINDS)},
                    **{f"plain_{k}_s_per_epoch": _median(pl_t, i) for i, k in enumerate(KINDS)},
                    "max_abs_loss_diff": diff,
                    "advrec_losses_last_epoch": both.advrec_losses[-1],
                    "plain_losses_last_epoch": both.plain_losses[-1],
                }
            )
    out = {
        "model": "CFGAN iZP as released (ML100K: item rows, G 400 / D 125, batch G 32 / D 64, "
        "4 G passes / 2 D passes an epoch)",
        "epochs_per_round": a.epochs,
        "callbacks": a.callbacks,
        "rounds": rounds,
    }
    for k in KINDS:
        fw = statistics.median(r[f"advrec_{k}_s_per_epoch"] for r in rounds)
        pl = statistics.median(r[f"plain_{k}_s_per_epoch"] for r in rounds)
        out |= {f"advrec_{k}_s_median": fw, f"plain_{k}_s_median": pl}
        out[f"ratio_{k}"] = round(fw / pl, 3)
    out |= {"torch_threads": torch.get_num_threads(), "machine": _machine()}
    print(json.dumps(out, indent=2))


KINDS = ("wall", "cpu")


def _median(times: list[tuple[float, float]], i: int) -> float:
    return round(statistics.median(t[i] for t in times), 4)


def _machine() -> str:
    return f"{platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}"


if __name__ == "__main__":
    main()
