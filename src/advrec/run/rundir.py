"""The run directory: a new run never replaces another's results, and a resume continues the
run it names under the config that run was started with.

- A run dir that already holds results (metrics.json, checkpoints) is refused unless the run
  resumes (`ckpt_path=...`) or `overwrite=true` clears it; a SLURM requeue (Lightning's
  `hpc_ckpt_*.ckpt` in the dir) is a resume.
- `ckpt_path=last` means `<run dir>/checkpoints/last.ckpt`; when there is none, nothing is
  silently trained from scratch.
- The checkpoint's stored config must equal this run's, up to the keys that cannot change
  the numbers (`RESUMABLE`) and those the user lists in `accept_changes=[...]`.
- The earlier logs stay: each `metrics.csv` is kept as `metrics.before-resume-<n>.csv`.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig

from advrec.errors import AdvrecError
from advrec.utils.io import read_checkpoint
from advrec.utils.runtime import in_multirun

log = logging.getLogger(__name__)

# Keys a resumed run may change: where files go, how long it trains, on what hardware, what
# it logs; none of them changes what a step computes. ("x." covers the whole group x.)
RESUMABLE = (
    "ckpt_path",
    "paths.",
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.max_time",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.strategy",
    "trainer.enable_progress_bar",
    "trainer.log_every_n_steps",
    "logger.",
    "callbacks.progress_bar.",
    "callbacks.resume_point.",
    "allow_targets",
    "accept_changes",
    "overwrite",
    "label",
    "per_user",
    "trial",
    "data.num_workers",
    "data.eval_batch_size",
)
RESULTS = ("metrics.json", "per_user_*.parquet", "checkpoints", "csv", "pretrain")


def prepare(cfg: DictConfig, run_config: dict) -> str | None:
    """Check the run dir for this run; return the checkpoint to resume from, or None.
    `run_config` is the config as checkpoints store it (compared on resume)."""
    out = Path(cfg.paths.output_dir)
    if cfg.get("ckpt_path"):
        path = resume_path(cfg, out)
        stored = read_checkpoint(path).get("advrec_config")
        if stored is None:
            raise AdvrecError(f"ckpt_path={path} was not written by advrec-train; cannot resume")
        check_unchanged(stored, run_config, cfg.get("accept_changes") or (), path)
        if rank_zero_only.rank == 0:  # the other DDP ranks start later and write no logs
            keep_logs(out)
        log.info("resuming %s", path)
        return str(path)
    if list(out.glob("hpc_ckpt_*.ckpt")):  # a requeued SLURM job: Lightning resumes from it
        return None
    if rank_zero_only.rank != 0:  # DDP ranks > 0 start after rank 0 has begun writing here
        return None
    found = [p for pattern in RESULTS for p in sorted(out.glob(pattern))]
    if not found:
        return None
    names = ", ".join(p.name for p in found)
    if not cfg.get("overwrite"):
        key = "hydra.sweep.dir" if in_multirun() else "hydra.run.dir"
        raise AdvrecError(
            f"the run dir {out} already holds a run ({names}); a new run would replace it. "
            f"Choose a new {key}, resume it with ckpt_path=last, or add overwrite=true to "
            "discard it"
        )
    for p in found:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    log.warning("overwrite=true: discarded the earlier run's %s in %s", names, out)
    return None


def resume_path(cfg: DictConfig, out: Path) -> Path:
    """`ckpt_path` as a file: `last` is this run dir's resume point."""
    if cfg.ckpt_path != "last":
        path = Path(cfg.ckpt_path)
        if not path.is_file():
            raise AdvrecError(f"ckpt_path={path}: no such checkpoint")
        return path
    path = out / "checkpoints" / "last.ckpt"
    if path.is_file():
        return path
    runs = sorted(
        Path(cfg.paths.log_dir).glob("*/runs/*/checkpoints/last.ckpt"),
        key=lambda p: p.stat().st_mtime,
    )
    hint = f"; the newest run that has one: hydra.run.dir={runs[-1].parents[1]}" if runs else ""
    raise AdvrecError(
        f"nothing to resume: {path} does not exist. ckpt_path=last resumes the run in "
        f"hydra.run.dir; pass the earlier run's dir{hint}"
    )


def flatten(node, prefix: str = "") -> dict:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def check_unchanged(stored: dict, current: dict, accepted, path: Path) -> None:
    """Refuse a resume whose config differs from the checkpoint's, listing the keys."""
    old, new = flatten(stored), flatten(current)
    keep = (*RESUMABLE, *accepted)
    diff = [
        k
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k) and not (k in keep or k.startswith(tuple(keep)))
    ]
    if not diff:
        return
    shown = "; ".join(f"{k}: {old.get(k, '<unset>')} -> {new.get(k, '<unset>')}" for k in diff[:6])
    more = f" and {len(diff) - 6} more" if len(diff) > 6 else ""
    raise AdvrecError(
        f"ckpt_path={path} was trained under another config ({shown}{more}); resume with the "
        "same overrides, or accept the change with "
        f"accept_changes=[{','.join(diff)}]"
    )


def keep_logs(out: Path) -> None:
    """Move every CSV log of the interrupted run aside (Lightning's CSVLogger deletes it)."""
    for f in sorted(out.glob("csv/**/metrics.csv")):
        n = len(list(f.parent.glob("metrics.before-resume-*.csv"))) + 1
        f.rename(f.with_name(f"metrics.before-resume-{n}.csv"))
