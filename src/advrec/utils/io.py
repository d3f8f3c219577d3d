"""Atomic file writes (a reader never sees half a file, a crash never leaves one) and
checkpoint reads that never run code."""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from pathlib import Path

import pandas as pd

from advrec.errors import AdvrecError


def _atomic(path: Path, write, binary: bool = False) -> Path:
    """`write(f)` into a temporary file beside `path`, flushed to disk, then renamed over it:
    on a full disk or a kill the old file (or none) stays, never a truncated one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide results from the group
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"newline": ""})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path | str, obj: dict) -> Path:
    return _atomic(Path(path), lambda f: json.dump(obj, f, indent=2, sort_keys=False))


def write_csv(path: Path | str, df: pd.DataFrame) -> Path:
    return _atomic(Path(path), lambda f: df.to_csv(f, index=False))


def write_bytes(path: Path | str, write) -> Path:
    """`write(f)` with a binary file object, atomically (see `_atomic`)."""
    return _atomic(Path(path), write, binary=True)


def write_text(path: Path | str, text: str) -> Path:
    return _atomic(Path(path), lambda f: f.write(text))


def read_checkpoint(path: Path, mmap: bool = False) -> dict:
    """A checkpoint's contents as data: tensors and plain containers only (unpickling
    anything else can run code, so it is refused before it is built). `mmap`: tensors stay
    on disk until read (reading a large model's epoch costs no memory)."""
    import torch  # here: writing a report should not pay for importing torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AdvrecError(
            f"{path} holds objects other than tensors and plain data ({first[:160]}); "
            "advrec checkpoints never do, so it was not loaded"
        ) from None
    except Exception as e:  # truncated, empty, random bytes, a directory
        raise AdvrecError(
            f"{path} is not a readable checkpoint ({type(e).__name__}: {e})"
        ) from None
