"""Fetch an official archive (pooch: download + MD5), then extract it safely and atomically."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from advrec.errors import AdvrecError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Archive:
    url: str
    md5: str
    folder: str  # the top-level folder inside the zip


GROUPLENS = "https://files.grouplens.org/datasets/movielens/"
MOVIELENS = {
    "100k": Archive(GROUPLENS + "ml-100k.zip", "0e33842e24a9c977be4e0107933c0723", "ml-100k"),
    "1m": Archive(GROUPLENS + "ml-1m.zip", "c4d9eecfca2ab87c1945afe126590906", "ml-1m"),
    "20m": Archive(GROUPLENS + "ml-20m.zip", "cd245b17a1ae2cc31bb14903e1204af3", "ml-20m"),
}


def fetch(archive: Archive, data_dir: Path, downloader: Callable | None = None) -> Path:
    """Download `archive` into `data_dir/.downloads`, verify its MD5, extract its folder.

    Nothing half-written is left behind: pooch keeps a download in a temporary file until the
    hash matches, and the extraction happens in a temporary folder that is renamed at the end.
    `downloader` (pooch's downloader protocol) lets tests serve a local file.
    """
    import pooch

    data_dir = Path(data_dir)
    try:
        (data_dir / ".downloads").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AdvrecError(
            f"cannot write to the data dir {data_dir} ({e.strerror}); point paths.data_dir "
            "(or ADVREC_DATA_DIR) at a writable folder or place the extracted data there."
        ) from None
    try:
        zip_path = pooch.retrieve(
            archive.url,
            known_hash=f"md5:{archive.md5}",
            fname=Path(archive.url).name,
            path=data_dir / ".downloads",
            downloader=downloader,
            progressbar=False,
        )
    except ValueError as e:  # pooch's hash mismatch
        raise AdvrecError(
            f"checksum mismatch for {archive.url}: the download was refused and deleted "
            f"({str(e).splitlines()[0]}). Retry later or fetch the archive by hand."
        ) from None
    except OSError as e:
        raise AdvrecError(
            f"could not download {archive.url} ({e}); check the network or place the "
            f"extracted folder {archive.folder}/ under {data_dir}."
        ) from None
    return safe_extract(Path(zip_path), data_dir, archive.folder)


def safe_extract(zip_path: Path, data_dir: Path, folder: str) -> Path:
    """Extract `folder/` from `zip_path` into `data_dir`, refusing escaping member paths."""
    data_dir = Path(data_dir).resolve()
    with zipfile.ZipFile(zip_path) as zf:
        members = zf.infolist()
        for m in members:
            target = (data_dir / m.filename).resolve()
            if m.filename.startswith(("/", "\\")) or not target.is_relative_to(data_dir):
                raise AdvrecError(
                    f"{zip_path.name}: member {m.filename!r} would be written outside "
                    f"{data_dir}; the archive was refused (nothing extracted)."
                )
            if (m.external_attr >> 16) & 0o170000 == 0o120000:
                raise AdvrecError(f"{zip_path.name}: member {m.filename!r} is a symlink; refused.")
        tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=data_dir))
        try:
            zf.extractall(tmp)
            src = tmp / folder
            if not src.is_dir():
                raise AdvrecError(f"{zip_path.name} has no folder {folder}/ inside; refused.")
            dest = data_dir / folder
            if dest.exists():  # never delete what is there: keep it beside, then swap
                kept = data_dir / f"{folder}.before-{time.strftime('%Y%m%d-%H%M%S')}"
                os.replace(dest, kept)
                log.warning("%s existed; kept as %s, extracted a fresh %s", dest, kept, folder)
            os.replace(src, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return data_dir / folder
