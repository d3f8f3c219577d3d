"""Fit time and peak memory of the baselines at ML-1M shape (6,040 users x 3,706 items,
1,000,209 interactions, seeded synthetic data), each model in its own process so each peak is
its own. Closed-form models fit once from the matrix; iALS trains `--sweeps` epochs (ALS
sweeps) through a Lightning Trainer, as advrec-train runs it. Prints JSON.

    python bench/baselines.py                   # every model, default settings
    python bench/baselines.py --models rp3beta userknn --users 6040 --items 3706
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

MODELS = {
    "ease": ("advrec.models.ease", "EASE", {"lam": 500.0}),
    "itemknn": ("advrec.models.itemknn", "ItemKNN", {"topk": 100}),
    "userknn": ("advrec.models.userknn", "UserKNN", {"topk": 100}),
    "rp3beta": ("advrec.models.rp3beta", "RP3beta", {"topk": 100}),
    "slim": ("advrec.models.slim", "SLIM", {"topk": 100, "alpha": 0.1, "l1_ratio": 0.01}),
    "ials": ("advrec.models.ials", "IALS", {"dim": 128, "reg": 0.003, "unobserved_weight": 0.1}),
}


def train_sweeps(model, data, sweeps: int) -> None:
    """`sweeps` epochs of a trained model on 99 % of `data` (a 1 % random test holdout, never
    evaluated; no validation)."""
    from advrec.data.datamodule import RecDataModule
    from advrec.run.build import bare_trainer

    class Whole:
        name = "bench"

        def load(self):
            return data

    dm = RecDataModule(source=Whole(), split={"method": "random_holdout", "test_fraction": 0.01})
    bare_trainer(max_epochs=sweeps, limit_val_batches=0).fit(model, datamodule=dm)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one(name: str, a) -> dict:
    """Fit `name` once on the synthetic matrix; the process's own peak memory."""
    import importlib

    import torch

    from advrec.data.sources import Synthetic

    data = Synthetic(a.users, a.items, a.interactions, seed=0).load()
    before = peak_rss_mib()
    module, cls, kw = MODELS[name]
    model = getattr(importlib.import_module(module), cls)(data.n_users, data.n_items, **kw)
    t = time.perf_counter()
    if hasattr(model, "fit_matrix"):
        model.fit_matrix(data.matrix)
    else:
        kw = {**kw, "sweeps": a.sweeps}
        train_sweeps(model, data, a.sweeps)
    fit_s = time.perf_counter() - t
    users = torch.arange(1024)
    history = torch.from_numpy(data.matrix[:1024].toarray())
    t = time.perf_counter()
    model.score(users, history)
    return {
        "model": cls,
        "settings": kw,
        "fit_s": round(fit_s, 2),
        "score_1024_users_s": round(time.perf_counter() - t, 3),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "peak_rss_mib_before_fit": round(before, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument("--users", type=int, default=6040)
    ap.add_argument("--items", type=int, default=3706)
    ap.add_argument("--interactions", type=int, default=1_000_209)
    ap.add_argument("--sweeps", type=int, default=10, help="iALS epochs")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.one, a)))
        return
    shape = ["--users", str(a.users), "--items", str(a.items)]
    shape += ["--interactions", str(a.interactions), "--sweeps", str(a.sweeps)]
    runs = []
    for name in a.models:
        cmd = [sys.executable, __file__, "--one", name, *shape]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
    print(
        json.dumps(
            {
                "shape": {"users": a.users, "items": a.items, "interactions": a.interactions},
                "runs": runs,
                "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
