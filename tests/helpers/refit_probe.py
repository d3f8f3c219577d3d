"""`python -m tests.helpers.refit_probe <advrec-train overrides>`: advrec-train as users run
it, printing (last stdout line, JSON) how many models and optimizer states were alive when
each `Trainer.fit` began: the refit's fit must find only the model it trains."""

import gc
import json
import sys

import torch
from lightning import Trainer

from advrec.models.base import Recommender

seen: list[dict] = []
_fit = Trainer.fit


def _census() -> dict:
    gc.collect()
    objects = gc.get_objects()
    # type(), not isinstance: a weakref proxy passes isinstance for what it points to
    models = [o for o in objects if issubclass(type(o), Recommender)]
    optimizers = [o for o in objects if issubclass(type(o), torch.optim.Optimizer)]
    return {"models": len(models), "optimizers": len(optimizers)}


def fit(self, model, *args, **kwargs):
    seen.append(_census())
    return _fit(self, model, *args, **kwargs)


if __name__ == "__main__":
    Trainer.fit = fit
    from advrec.train import main

    sys.argv = ["advrec-train", *sys.argv[1:]]
    try:
        main()
    finally:
        print(json.dumps(seen))
