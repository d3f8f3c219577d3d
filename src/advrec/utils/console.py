"""Console output: the config tree at start, the metrics table at the end, clean errors."""

from __future__ import annotations

import errno
import functools
import logging
import shlex
import sys
import warnings

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table

from advrec.errors import AdvrecError, BadTrial
from advrec.metrics.names import METRICS
from advrec.utils.runtime import in_search, verbose

# soft wrap: a path longer than the terminal (or than 80 columns in a log file) stays one line
console = Console(stderr=False, soft_wrap=True)
log = logging.getLogger("advrec")


def print_config(cfg: DictConfig, keys=("data", "model", "protocol", "trainer", "seed")) -> None:
    resolved = OmegaConf.to_container(cfg, resolve=True)
    text = OmegaConf.to_yaml({k: resolved[k] for k in keys if k in resolved})
    console.print(Syntax(text, "yaml", theme="ansi_dark", background_color="default"))


def metrics_table(metrics: dict, ks, title: str) -> Table:
    """Rows = metric names, columns = stages x K (only the stages present)."""
    stages = [s for s in ("val", "test") if any(k.startswith(f"{s}/") for k in metrics)]
    table = Table(title=title)
    table.add_column("metric")
    for s in stages:
        for k in ks:
            table.add_column(f"{s} @{k}", justify="right")
    for name in METRICS:
        cells = []
        for s in stages:
            for k in ks:
                v = metrics.get(f"{s}/{name}@{k}")
                cells.append("-" if v is None else f"{v:.4f}")
        table.add_row(name, *cells)
    return table


def command(drop: tuple[str, ...] = ()) -> str:
    """This advrec-train process's command line as a user types it, less the overrides of
    the keys in `drop` (what a resume line repeats)."""
    args = [a for a in sys.argv[1:] if a.split("=", 1)[0].lstrip("+~") not in drop]
    return shlex.join(["advrec-train", *args])


def check_config(cfg: DictConfig) -> None:
    """Refuse a config with `???` values before any work starts."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        hint = " ".join(f"{k}=..." for k in missing)
        raise AdvrecError(f"config value(s) {missing} must be set; add {hint} to the command")


DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)

# Library warnings that say nothing to an advrec user (tests ignore the same list)
NOISE = (
    r".*does not have many workers.*",
    r".*The number of training batches .* is smaller than the logging interval.*",
    r".*overridden `transfer_batch_to_device` in `LightningModule`.*",
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
    r".*configure_optimizers` returned `None`.*",  # closed-form models fit without one
    r".*contains no parameters.*",  # a closed-form model kept in sparse matrices
)


# Lightning's INFO lines that say nothing to an advrec user (the machine's accelerators, an
# advert, "fit stopped: max_epochs reached"); its other lines, e.g. a resume's, stay
NOISE_LOGS = (
    "GPU available",
    "TPU available",
    "HPU available",
    "Tip:",
    "`Trainer.fit` stopped",
    "You are using a CUDA device",
)
LIGHTNING_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
)


class BriefFormatter(logging.Formatter):
    """`HH:MM:SS message`, with the level named from WARNING up (the terminal's log lines)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(message)s", datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.WARNING:
            stamp, _, rest = text.partition(" ")
            text = f"{stamp} {record.levelname}: {rest}"
        return text


def _not_noise(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not any(n in message for n in NOISE_LOGS)


def quiet() -> None:
    """Silence `NOISE` and `NOISE_LOGS`; the entry points call it when they start (nothing at
    import). `hydra.verbose=true` keeps everything."""
    for pattern in NOISE:
        warnings.filterwarnings("ignore", message=pattern)
    if verbose():
        return
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if _not_noise not in logger.filters:
            logger.addFilter(_not_noise)


def user_errors(fn):
    """An entry point: library noise silenced, user mistakes turned into one clear line on
    stderr and exit status 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(cfg, *args, **kwargs):
        quiet()
        try:
            check_config(cfg)
            return fn(cfg, *args, **kwargs)
        except BadTrial as e:
            if in_search():
                raise  # to the sweeper, which prunes this trial and goes on
            message = str(e)
        except AdvrecError as e:
            message = str(e)
        except MissingMandatoryValue as e:
            message = f"config value {e.full_key} must be set; add {e.full_key}=... to the command"
        except OmegaConfBaseException as e:
            # one line: OmegaConf appends "full_key: ..." / "object_type=..." lines of its own
            message = f"bad config at {e.full_key or '?'}: {str(e.msg).splitlines()[0]}"
        except OSError as e:
            if e.errno not in DISK_ERRORS:
                raise
            message = (
                f"cannot write {e.filename or 'a file'}: {e.strerror}; free space or write "
                "elsewhere (hydra.run.dir=..., paths.log_dir=..., ADVREC_CACHE_DIR)"
            )
        print(f"advrec: error: {message}", file=sys.stderr)
        sys.exit(2)

    return wrapper


def writable_folder(folder) -> str | None:
    """None when files can be created in `folder` (made if missing), else why not. Tried for
    real: permission bits say nothing to root on a read-only file system."""
    import os
    import tempfile
    from pathlib import Path

    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".advrec-write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        return e.strerror or str(e)
    return None


class OutputFolderCheck(Callback):
    """Hydra callback (conf/hydra/default.yaml): the run or sweep folder must be writable
    before Hydra creates its logs there; otherwise one line, exit 2, instead of Hydra's
    logging traceback."""

    def _check(self, config: DictConfig, key: str) -> None:
        folder = OmegaConf.select(config, key)
        why = writable_folder(folder) if folder else None
        if why:
            print(
                f"advrec: error: cannot write the output folder {folder} ({why}); give a "
                f"writable one: {key}=<folder> (or paths.log_dir=<folder>)",
                file=sys.stderr,
            )
            sys.exit(2)

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config, "hydra.sweep.dir")
