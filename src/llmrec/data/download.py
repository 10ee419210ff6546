"""Pinned, cached, verified downloads of public datasets, and safe archive extraction.

Datasets that are not bundled come either from a local folder (``LLMREC_DATA_DIR``, see :func:`external_data_dir`)
or from their official URL. A download is only trusted when its sha256 matches the digest pinned next to the URL,
so a moved, truncated or tampered file fails loudly instead of producing silently different results. Files are
streamed to a temporary file in the cache folder and renamed into place only once verified, so an interrupted
download never leaves a half-written file under the final name.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import stat
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from llmrec.config import get_settings
from llmrec.errors import DataProblem, DataValidationError, DownloadError
from llmrec.progress import progress

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "KNOWN_DOWNLOADS",
    "external_data_dir",
    "extract_zip",
    "fetch",
    "fetch_known",
    "sha256_file",
]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 60.0
"""Seconds a connection attempt or a single read may block before the download is abandoned."""

_CHUNK = 1 << 16
_SHA256 = re.compile(r"[0-9a-f]{64}")

KNOWN_DOWNLOADS: dict[str, tuple[str, str]] = {
    # Official GroupLens zip (Sept 2018 release, 978,202 bytes); the digest is the one pinned by
    # tensorflow/datasets (url_checksums/movielens.txt). GroupLens licence: non-commercial research only.
    "movielens-latest-small": (
        "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip",
        "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
    ),
}
"""Name -> ``(official URL, sha256)`` of the archives llmrec knows how to fetch."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks (constant memory)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def external_data_dir(name: str | None = None) -> Path:
    """The configured folder of non-bundled datasets (``LLMREC_DATA_DIR``), or one dataset's sub-folder in it.

    Loaders call this when no explicit path is given, so the error a user sees when the data is missing says how to
    point llmrec at it instead of a bare ``FileNotFoundError``.

    Args:
        name: Sub-folder of one dataset (e.g. ``"goodbooks-10k"``); the root folder when ``None``.

    Raises:
        DataValidationError: No data folder is configured, or the folder (or sub-folder) does not exist.

    """
    root = get_settings().data_dir
    fix = (
        "set the environment variable LLMREC_DATA_DIR to the folder that holds the datasets "
        "(e.g. shared/datasets), or pass the path to the loader"
    )
    if root is None:
        raise DataValidationError([DataProblem("LLMREC_DATA_DIR", None, None, "no data folder is configured", fix)])
    folder = Path(root) / name if name else Path(root)
    if not folder.is_dir():
        raise DataValidationError([DataProblem(str(folder), None, None, "data folder not found", fix)])
    return folder


def _default_filename(url: str) -> str:
    name = PurePosixPath(urllib.parse.urlparse(url).path).name
    if not name:
        raise DownloadError(f"cannot derive a file name from {url!r}; pass filename=")
    return name


def _stream(url: str, out: BinaryIO, timeout: float, show_progress: bool, label: str) -> str:
    """Copy the body of ``url`` into the binary file ``out``; return the sha256 of what was written."""
    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": "llmrec"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        with progress(show_progress, label, total, unit="bytes", transient=True) as advance:
            received = 0
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                advance(len(chunk))
        if total is not None and received != total:
            raise DownloadError(f"download of {url} was cut short: got {received} of {total} bytes")
    return digest.hexdigest()


def fetch(
    url: str,
    sha256: str,
    *,
    cache_dir: Path | None = None,
    filename: str | None = None,
    show_progress: bool = False,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """Return a verified local copy of ``url``, downloading it only when the cache lacks a good copy.

    The cached file is reused when its sha256 equals ``sha256``; a cached file with another digest (stale or
    corrupt) is replaced. A download is written to a temporary file in the cache folder, hashed as it streams,
    and renamed into place atomically only when the digest matches, so the final path only ever holds a verified
    file and a failed or interrupted download leaves nothing behind.

    Args:
        url: Address to download (``http``, ``https`` or ``file``).
        sha256: Expected hex sha256 of the file (case-insensitive).
        cache_dir: Folder to keep downloads in; ``<settings.cache_dir>/downloads`` when ``None``.
        filename: Name of the file in the cache; the last segment of the URL path when ``None``.
        show_progress: Draw a progress bar on stderr.
        timeout: Seconds a connection or a single read may block.

    Returns:
        Path of the verified file in the cache folder.

    Raises:
        DownloadError: ``sha256`` or ``filename`` is malformed, the server could not be reached, answered with an
            error, the transfer broke off, or the checksum did not match (the message names the URL and both
            digests).

    """
    expected = sha256.strip().lower()
    if not _SHA256.fullmatch(expected):
        raise DownloadError(f"{sha256!r} is not a sha256 digest (64 hex digits). Fix: pin the digest of {url}")
    folder = Path(cache_dir) if cache_dir is not None else get_settings().cache_dir / "downloads"
    name = filename or _default_filename(url)
    if name in (".", "..") or PurePosixPath(name.replace("\\", "/")).name != name:
        raise DownloadError(f"filename {name!r} must be a plain file name, without folders")
    target = folder / name
    if target.is_file():
        actual = sha256_file(target)
        if actual == expected:
            logger.debug("cache hit for %s at %s", url, target)
            return target
        logger.warning("cached %s has sha256 %s, expected %s; downloading it again", target, actual, expected)
    by_hand = (
        f"download {url} by hand, check that its sha256 is {expected}, and put it at {target} "
        "(or pass the local path to the loader)"
    )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
    except OSError as exc:
        raise DownloadError(
            f"cannot write to the cache folder {folder}: {exc}. Fix: set LLMREC_CACHE_DIR to a writable folder"
        ) from exc
    tmp = Path(tmp_name)
    try:
        logger.info("downloading %s to %s", url, target)
        with os.fdopen(fd, "wb") as out:
            try:
                actual = _stream(url, out, timeout, show_progress, name)
            except DownloadError as exc:
                raise DownloadError(f"{exc}. Fix: retry, or {by_hand}") from exc
            except urllib.error.HTTPError as exc:
                raise DownloadError(f"{url} answered HTTP {exc.code} {exc.reason}. Fix: {by_hand}") from exc
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", None) or exc
                raise DownloadError(f"could not download {url}: {reason}. Fix: {by_hand}") from exc
        if actual != expected:
            raise DownloadError(
                f"checksum mismatch for {url}: expected sha256 {expected}, got {actual}. The file was deleted. "
                "Fix: the server may have published a different version; check the official page, and if the "
                f"file is right, pin its new digest (or {by_hand})"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("saved %s (sha256 verified)", target)
    return target


def fetch_known(
    name: str,
    *,
    cache_dir: Path | None = None,
    show_progress: bool = False,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """Fetch one of :data:`KNOWN_DOWNLOADS` by name, with its pinned URL and digest (see :func:`fetch`).

    Raises:
        DownloadError: ``name`` is not a known download, or :func:`fetch` failed.

    """
    if name not in KNOWN_DOWNLOADS:
        raise DownloadError(f"unknown download {name!r}. Fix: use one of {sorted(KNOWN_DOWNLOADS)}")
    url, digest = KNOWN_DOWNLOADS[name]
    return fetch(url, digest, cache_dir=cache_dir, show_progress=show_progress, timeout=timeout)


def _unsafe_reason(info: zipfile.ZipInfo, root: Path) -> str | None:
    """Why extracting ``info`` under ``root`` would be unsafe, or ``None`` when it is fine."""
    raw = info.filename
    if "\x00" in raw:
        return "member name contains a NUL byte"
    normalised = raw.replace("\\", "/")
    posix = PurePosixPath(normalised)
    if posix.is_absolute() or (len(normalised) > 1 and normalised[1] == ":"):
        return "member has an absolute path"
    if ".." in posix.parts:
        return "member path climbs out of the destination ('..')"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "member is a symbolic link"
    resolved = (root / normalised).resolve()
    if not resolved.is_relative_to(root):
        return "member path resolves outside the destination"
    return None


def extract_zip(path: Path, dest: Path) -> Path:
    """Extract a zip archive into ``dest``, refusing archives that would write outside it.

    Every member is checked before anything is written (absolute paths, drive letters, ``..`` segments, symbolic
    links, and paths that resolve outside ``dest``), so a malicious or broken archive extracts nothing.

    Args:
        path: The zip file.
        dest: Destination folder (created when missing).

    Returns:
        ``dest``.

    Raises:
        DataValidationError: The file is not a readable zip, or a member is unsafe (the problem names the member).

    """
    path = Path(path)
    dest = Path(dest)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataValidationError(
            [DataProblem(str(path), None, None, f"not a readable zip archive ({exc})", "download the file again")]
        ) from exc
    with archive:
        root = dest.resolve()
        problems = [
            DataProblem(
                str(path), None, info.filename, reason, "do not use this archive; get it from the official source"
            )
            for info in archive.infolist()
            if (reason := _unsafe_reason(info, root)) is not None
        ]
        if problems:
            raise DataValidationError(problems)
        root.mkdir(parents=True, exist_ok=True)
        archive.extractall(root)
    logger.info("extracted %s into %s", path, dest)
    return dest
