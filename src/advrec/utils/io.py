"""Atomic file writes: a reader never sees half a file, a crash never leaves one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pandas as pd


def _atomic(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide results from the group
    try:
        with os.fdopen(fd, "w", newline="") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path | str, obj: dict) -> Path:
    return _atomic(Path(path), lambda f: json.dump(obj, f, indent=2, sort_keys=False))


def write_csv(path: Path | str, df: pd.DataFrame) -> Path:
    return _atomic(Path(path), lambda f: df.to_csv(f, index=False))


def write_text(path: Path | str, text: str) -> Path:
    return _atomic(Path(path), lambda f: f.write(text))
