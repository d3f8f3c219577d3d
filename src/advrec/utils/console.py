"""Console output: the config tree at start, the metrics table at the end, clean errors."""

from __future__ import annotations

import functools
import logging
import sys

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table

from advrec.errors import AdvrecError

console = Console(stderr=False)
log = logging.getLogger("advrec")


def print_config(cfg: DictConfig, keys=("data", "model", "protocol", "trainer", "seed")) -> None:
    resolved = OmegaConf.to_container(cfg, resolve=True)
    text = OmegaConf.to_yaml({k: resolved[k] for k in keys if k in resolved})
    console.print(Syntax(text, "yaml", theme="ansi_dark", background_color="default"))


def metrics_table(metrics: dict, ks, title: str) -> Table:
    """Rows = metric names, columns = stages x K (only the stages present)."""
    names = ["precision", "recall", "ndcg", "mrr", "hit", "coverage"]
    stages = [s for s in ("val", "test") if any(k.startswith(f"{s}/") for k in metrics)]
    table = Table(title=title)
    table.add_column("metric")
    for s in stages:
        for k in ks:
            table.add_column(f"{s} @{k}", justify="right")
    for name in names:
        cells = []
        for s in stages:
            for k in ks:
                v = metrics.get(f"{s}/{name}@{k}")
                cells.append("-" if v is None else f"{v:.4f}")
        table.add_row(name, *cells)
    return table


def user_errors(fn):
    """Turn `AdvrecError` into one clear line on stderr and exit status 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AdvrecError as e:
            print(f"advrec: error: {e}", file=sys.stderr)
            sys.exit(2)

    return wrapper
