"""Fetch, verify and unpack the RAVDESS speech-video archives (Zenodo record 1188976).

The workflow needs the 24 ``Video_Speech_Actor_XX.zip`` archives (about 500 MB each). They are either
downloaded from Zenodo with :func:`fetch` (resumable through HTTP ``Range``, retried with exponential
backoff, md5 computed while streaming) or taken from disk with :func:`use_local` (config key
``data.archives_dir``). Each placed archive gets a small JSON record (name, size, md5, source) written by
:func:`write_record`, so a reused archive can be checked with :func:`verify_record`. :func:`extract_members`
then unpacks only the audio-video speech clips (``01-01-*.mp4``; the archives also hold ``02-01-*``
video-only copies) flat into one directory, refusing unsafe member names and leaving nothing behind on error.

Only the standard library is used. Every failure raises :class:`DownloadError` with a message that names
the URL or file, says what was expected and what was found, and what to do about it.

CLI (one Snakemake rule per subcommand)::

    python -m avemotion.download fetch --url URL --out FILE --record FILE [--md5 HEX] [--size N]
    python -m avemotion.download local --src FILE --out FILE --record FILE [--md5 HEX] [--size N]
    python -m avemotion.download extract --archive FILE --out DIR [--pattern GLOB]
"""

from __future__ import annotations

import argparse
import fnmatch
import glob
import hashlib
import http.client
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from email.message import Message
from pathlib import Path
from typing import IO

ZENODO_RECORD = "1188976"
# One archive per actor (XX = 01..24); `?download=1` makes Zenodo serve the file rather than a preview page.
VIDEO_SPEECH_URL = "https://zenodo.org/records/1188976/files/Video_Speech_Actor_{actor:02d}.zip?download=1"
# md5 sums published on the Zenodo record 1188976 file listing (https://zenodo.org/records/1188976).
# The per-actor video archives' sums are not recorded here (not available offline): their md5 is optional
# and, when unknown, the md5 computed at download time is stored in the archive's record instead.
KNOWN_MD5: dict[str, str] = {
    "Audio_Speech_Actors_01-24.zip": "bc696df654c87fed845eb13823edef8a",
    # RAVDESS facial tracking (OpenFace 2.1.0), Zenodo record 3255102.
    "FacialTracking_Actors_01-24.zip": "5753bbc64a9a790f8a8d3e03cba526ee",
}
AV_SPEECH_PATTERN = "01-01-*.mp4"  # modality 01 (audio-video), vocal channel 01 (speech)

USER_AGENT = "avemotion-download/0.1 (+https://zenodo.org/records/1188976)"
MAX_BACKOFF_S = 60.0  # cap on one wait between attempts
_TRANSIENT_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})  # worth retrying; other 4xx/5xx are final
_MD5_RE = re.compile(r"[0-9a-f]{32}")
_CONTENT_RANGE_RE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")
_sleep = time.sleep  # indirection so tests can record the backoff without waiting


class DownloadError(RuntimeError):
    """A download, verification or extraction failed; the message says which file and what to do."""


@dataclass(frozen=True)
class ArchiveRecord:
    """What was placed: file name, size in bytes, md5 (hex) and where it came from (URL or file URI)."""

    name: str
    size: int
    md5: str
    source: str


def video_speech_url(actor: int) -> str:
    """Zenodo URL of one actor's speech-video archive (actor 1..24)."""
    if not 1 <= actor <= 24:
        raise ValueError(f"RAVDESS actors are numbered 1..24, got {actor}")
    return VIDEO_SPEECH_URL.format(actor=actor)


def part_path(dest: Path) -> Path:
    """Where :func:`fetch` streams ``dest`` before the final rename (``<dest>.part``)."""
    dest = Path(dest)
    return dest.parent / (dest.name + ".part")


# --------------------------------------------------------------------------------------------------- hashing


def _new_md5() -> hashlib._Hash:
    return hashlib.md5(usedforsecurity=False)  # integrity check, not security


def _hash_into(path: Path, digest: hashlib._Hash, chunk_size: int = 1 << 20) -> int:
    """Feed the file's bytes into ``digest``; return the number of bytes read."""
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
            n += len(chunk)
    return n


def md5sum(path: Path, chunk_size: int = 1 << 20) -> str:
    """md5 (lower-case hex) of a file, read in chunks."""
    digest = _new_md5()
    _hash_into(Path(path), digest, chunk_size)
    return digest.hexdigest()


def _normalise_md5(value: str | None, where: str) -> str | None:
    if value is None:
        return None
    md5 = value.strip().lower()
    if not _MD5_RE.fullmatch(md5):
        raise DownloadError(f"{where}: expected md5 {value!r} is not 32 hex digits; fix the md5 given for it")
    return md5


# -------------------------------------------------------------------------------------------------- progress


class _Progress:
    """Throttled progress lines on stderr: at most once a second, every 5 % or at least every 10 s."""

    def __init__(
        self, label: str, total: int | None, start: int, enabled: bool, stream: IO[str] | None = None
    ):
        self.label, self.total, self.start, self.enabled = label, total, start, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.t0 = self.t_last = time.monotonic()
        self.done_last = start

    def update(self, done: int, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not final:
            if now - self.t_last < 1.0:
                return
            step = self.total is not None and self.total > 0 and (done - self.done_last) * 20 >= self.total
            if not step and now - self.t_last < 10.0:
                return
        rate = (done - self.start) / max(now - self.t0, 1e-6) / 1e6
        if self.total:
            pct = 100.0 * done / self.total
            text = f"{done / 1e6:.1f}/{self.total / 1e6:.1f} MB ({pct:.1f} %)"
        else:
            text = f"{done / 1e6:.1f} MB"
        print(f"{self.label}: {text}, {rate:.2f} MB/s", file=self.stream, flush=True)
        self.t_last, self.done_last = now, done


# ----------------------------------------------------------------------------------------------------- fetch


class _Transient(Exception):
    """A failed attempt worth retrying (connection error, timeout, short read, HTTP 5xx)."""


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def _size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """``bytes 100-199/1000`` -> (100, 1000); ``bytes */1000`` -> (None, 1000); unknown parts -> None."""
    m = _CONTENT_RANGE_RE.fullmatch((value or "").strip())
    if not m:
        return None, None
    start = int(m[1]) if m[1] is not None else None
    total = int(m[3]) if m[3] != "*" else None
    return start, total


def _content_length(headers: Message) -> int | None:
    value = headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _attempt(
    url: str,
    part: Path,
    *,
    label: str,
    expected_size: int | None,
    timeout: float,
    chunk_size: int,
    progress: bool,
) -> tuple[str, int]:
    """One request: resume or (re)start ``part`` and stream to its end. Returns (md5 hex, size).

    Raises :class:`_Transient` for failures worth retrying and :class:`DownloadError` for final ones.
    """
    is_http = urllib.parse.urlsplit(url).scheme in ("http", "https")
    offset = _size_or_zero(part) if is_http else 0  # Range does not apply to file:// URLs: read it whole
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:
            # The range starts at or past the end: the part is complete if its size is the file's size;
            # otherwise it is not a prefix of this file (too long) and is started over.
            _, total = _parse_content_range(exc.headers.get("Content-Range") if exc.headers else None)
            total = total if total is not None else expected_size
            if total == offset:
                digest = _new_md5()
                _hash_into(part, digest)
                return digest.hexdigest(), offset
            if progress:
                print(
                    f"{label}: partial file does not fit the server's ({total} bytes), starting over",
                    file=sys.stderr,
                )
            _remove(part)
            return _attempt(
                url,
                part,
                label=label,
                expected_size=expected_size,
                timeout=timeout,
                chunk_size=chunk_size,
                progress=progress,
            )  # offset 0 now: no Range, so no second 416
        if exc.code in _TRANSIENT_HTTP:
            raise _Transient(f"HTTP {exc.code} {exc.reason}") from exc
        raise DownloadError(
            f"{url}: server answered HTTP {exc.code} {exc.reason}. Check the URL (data source in the "
            "config); if the file moved, update it, or set data.archives_dir to use archives already on disk."
        ) from exc
    except urllib.error.URLError as exc:
        if not is_http:
            raise DownloadError(f"{url}: cannot read ({exc.reason}); check that the file exists") from exc
        raise _Transient(f"cannot connect ({exc.reason})") from exc
    except (OSError, http.client.HTTPException) as exc:  # timeout or reset while reading the headers
        raise _Transient(f"{type(exc).__name__}: {exc}") from exc

    with response:
        status = response.getcode()
        if status == 206:
            start, total = _parse_content_range(response.headers.get("Content-Range"))
            if start != offset:
                _remove(part)
                raise _Transient(f"server resumed at byte {start} instead of {offset}; starting over")
            if total is None:
                length = _content_length(response.headers)
                total = offset + length if length is not None else None
        else:
            # 200 (or a file:// read): the whole file follows, also when a range was asked for and ignored.
            if offset and progress:
                print(f"{label}: server ignored the range request, starting over", file=sys.stderr)
            offset = 0
            total = _content_length(response.headers)
        if expected_size is not None and total is not None and total != expected_size:
            _remove(part)
            raise DownloadError(
                f"{url}: server reports {total} bytes, expected {expected_size}. The file on the server is "
                "not the expected one: check the URL and the expected size in the config."
            )

        digest = _new_md5()
        if offset:
            _hash_into(part, digest)  # resume: the md5 covers the bytes already on disk first
        meter = _Progress(label, total, offset, progress)
        done = offset
        with open(part, "ab" if offset else "wb") as out:
            while True:
                try:
                    chunk = response.read(chunk_size)
                except (OSError, http.client.HTTPException) as exc:  # timeout, reset, incomplete chunk
                    of = total if total is not None else "?"
                    raise _Transient(f"connection lost after {done} of {of} bytes ({exc!r})") from exc
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                meter.update(done)
            out.flush()
            os.fsync(out.fileno())
        if total is not None and done < total:
            raise _Transient(f"connection closed after {done} of {total} bytes (short read)")
        meter.update(done, final=True)
        return digest.hexdigest(), done


def fetch(
    url: str,
    dest: Path,
    *,
    expected_md5: str | None = None,
    expected_size: int | None = None,
    retries: int = 5,
    timeout: float = 60.0,
    backoff: float = 2.0,
    chunk_size: int = 1 << 20,
    progress: bool = True,
) -> ArchiveRecord:
    """Download ``url`` (http, https or file) to ``dest``, resumably, and verify it.

    Bytes stream into ``<dest>.part``; an existing part (from an interrupted attempt or run) is resumed with
    ``Range: bytes=N-`` (206: append; 200: the server ignored the range, start over; 416: the part is
    complete if its size is the file's size, else start over). Connection errors, timeouts, short reads and
    HTTP 408/429/5xx are retried after ``backoff * 2**k`` seconds (capped at 60 s); ``retries`` counts
    consecutive failed attempts that brought no new bytes, so a slow but progressing transfer is not given
    up. The md5 is computed while streaming. On success the part is renamed to ``dest`` (atomic); on a size
    or md5 mismatch the part is deleted and nothing is left. When retries run out the part is kept so that
    a rerun resumes it.
    """
    dest = Path(dest)
    want_md5 = _normalise_md5(expected_md5, url)
    part = part_path(dest)
    label = dest.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures, attempts = 0, 0
    high_water = _size_or_zero(part)
    while True:
        attempts += 1
        try:
            got_md5, size = _attempt(
                url,
                part,
                label=label,
                expected_size=expected_size,
                timeout=timeout,
                chunk_size=chunk_size,
                progress=progress,
            )
            break
        except _Transient as exc:
            reached = _size_or_zero(part)
            if reached > high_water:  # progress: this attempt brought new bytes
                high_water, failures = reached, 0
            failures += 1
            if failures > retries:
                if reached == 0:
                    _remove(part)
                    kept = "No partial file was kept."
                else:
                    kept = f"The partial file {part} ({reached} bytes) is kept: rerun to resume it."
                raise DownloadError(
                    f"{url}: download failed after {attempts} attempts, last error: {exc}. {kept} Check your "
                    "connection; if zenodo.org cannot be reached from here, get the archives another way and "
                    "set data.archives_dir to use archives already on disk."
                ) from exc
            delay = min(backoff * 2 ** (failures - 1), MAX_BACKOFF_S)
            print(
                f"{label}: attempt {attempts} failed ({exc}); retry {failures}/{retries} in {delay:.1f} s",
                file=sys.stderr,
                flush=True,
            )
            _sleep(delay)
        except OSError as exc:  # local disk: full, read-only, permissions
            raise DownloadError(
                f"{url}: cannot write {part} ({exc}); check free space and permissions of {part.parent}"
            ) from exc

    problems = []
    if expected_size is not None and size != expected_size:
        problems.append(f"expected {expected_size} bytes, got {size}")
    if want_md5 is not None and got_md5 != want_md5:
        problems.append(f"expected md5 {want_md5}, got {got_md5}")
    if problems:
        _remove(part)
        raise DownloadError(
            f"{url}: downloaded {dest.name} does not verify: {'; '.join(problems)}. The downloaded file was "
            "deleted; rerun to download it again. If this repeats, the file on the server differs from the "
            "expected one: check the URL and the md5/size in the config."
        )
    os.replace(part, dest)
    return ArchiveRecord(name=dest.name, size=size, md5=got_md5, source=url)


# ------------------------------------------------------------------------------------------------ local copy


def _check_file(path: Path, want_size: int | None, want_md5: str | None, advice: str) -> tuple[int, str]:
    """Size and md5 of ``path``, checked against the expected ones (when given)."""
    size = path.stat().st_size
    if want_size is not None and size != want_size:
        raise DownloadError(f"{path}: expected {want_size} bytes, got {size}. {advice}")
    md5 = md5sum(path)
    if want_md5 is not None and md5 != want_md5:
        raise DownloadError(f"{path}: expected md5 {want_md5}, got {md5}. {advice}")
    return size, md5


def use_local(
    src: Path,
    dest: Path,
    *,
    expected_md5: str | None = None,
    expected_size: int | None = None,
) -> ArchiveRecord:
    """Place an archive already on disk at ``dest``: verify it, then hardlink it (copy if linking fails)."""
    src, dest = Path(src), Path(dest)
    want_md5 = _normalise_md5(expected_md5, str(src))
    if not src.is_file():
        raise DownloadError(
            f"archive {src} not found. Check data.archives_dir in the config (it must hold the "
            "Video_Speech_Actor_XX.zip files), or leave it empty to download the archives from Zenodo."
        )
    size, md5 = _check_file(
        src,
        expected_size,
        want_md5,
        "The archive is incomplete, corrupt or a different file: replace it with a fresh copy, or remove it "
        "from data.archives_dir to download it.",
    )
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not (dest.exists() and os.path.samefile(src, dest)):
        for stale in dest.parent.glob(f".{glob.escape(dest.name)}.tmp-*"):  # a killed copy's link
            _remove(stale)
        tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
        try:
            try:
                os.link(src, tmp)  # no copy of 500 MB when src and dest share a file system
            except OSError:
                shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
        except OSError as exc:
            _remove(tmp)
            raise DownloadError(
                f"cannot place {src} at {dest} ({exc}); check free space and permissions of {dest.parent}"
            ) from exc
    return ArchiveRecord(name=dest.name, size=size, md5=md5, source=src.absolute().as_uri())


# -------------------------------------------------------------------------------------------------- records


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_record(path: Path, record: ArchiveRecord) -> None:
    """Write the record as JSON (sorted keys, no timestamps: byte-identical for identical archives)."""
    _atomic_write_text(Path(path), json.dumps(asdict(record), sort_keys=True, indent=2) + "\n")


def read_record(path: Path) -> ArchiveRecord:
    """Read a record written by :func:`write_record`."""
    path = Path(path)
    advice = "delete it and rerun the download step to recreate it"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DownloadError(f"archive record {path} not found; rerun the download step") from exc
    except (OSError, ValueError) as exc:
        raise DownloadError(f"archive record {path} is not readable JSON ({exc}); {advice}") from exc
    want = {f.name: f.type for f in fields(ArchiveRecord)}
    if not isinstance(data, dict) or set(data) != set(want):
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise DownloadError(f"archive record {path}: expected keys {sorted(want)}, got {got}; {advice}")
    if not (
        isinstance(data["size"], int)
        and data["size"] >= 0
        and all(isinstance(data[k], str) for k in ("name", "md5", "source"))
        and _MD5_RE.fullmatch(data["md5"])
    ):
        raise DownloadError(f"archive record {path}: bad values {data}; {advice}")
    return ArchiveRecord(**data)


def verify_record(dest: Path, record: ArchiveRecord) -> None:
    """Check that ``dest`` still is the archive described by ``record`` (name, size, then md5)."""
    dest = Path(dest)
    advice = f"It was modified or is incomplete: delete {dest} and its record and rerun to fetch it again."
    if not dest.is_file():
        raise DownloadError(
            f"{dest}: archive missing (its record says {record.size} bytes); rerun the download"
        )
    if dest.name != record.name:
        raise DownloadError(f"{dest}: record is for {record.name!r}, not {dest.name!r}. {advice}")
    _check_file(dest, record.size, record.md5, advice)


# ------------------------------------------------------------------------------------------------- extract


def _unsafe_reason(info: zipfile.ZipInfo, out_dir: Path) -> str | None:
    """Why a member must not be extracted (zip-slip and friends), or None if it is safe."""
    name = info.filename
    parts = re.split(r"[/\\]", name)
    if name.startswith(("/", "\\")):
        return "absolute path"
    if re.match(r"[A-Za-z]:", name):
        return "drive letter"
    if ".." in parts:
        return "'..' path component"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symbolic link"
    root = out_dir.resolve()
    target = (root / name).resolve()
    if not target.is_relative_to(root):
        return "path outside the output directory"
    return None


def extract_members(archive: Path, out_dir: Path, pattern: str = AV_SPEECH_PATTERN) -> list[Path]:
    """Extract the members whose basename matches ``pattern`` flat into ``out_dir``; return their paths.

    The whole archive is refused if any member is unsafe (absolute, drive letter, ``..``, symlink, outside
    ``out_dir``). Kept members are read fully, so CRC errors surface. Extraction goes into the sibling
    ``.tmp-<out_dir>`` which is renamed to ``out_dir`` only when everything succeeded; on any error it is
    removed, so nothing partial is left. ``out_dir`` must not exist yet (or be empty).
    """
    archive, out_dir = Path(archive), Path(out_dir)
    redownload = f"delete {archive} (and its record) and rerun to download it again"
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise DownloadError(
            f"{out_dir} already exists and is not empty; delete it to extract {archive} again"
        )
    tmp = out_dir.parent / (".tmp-" + out_dir.name)
    if tmp.exists():
        shutil.rmtree(tmp)  # left by a crashed earlier run
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                reason = _unsafe_reason(info, out_dir)
                if reason:
                    raise DownloadError(
                        f"{archive}: unsafe member {info.filename!r} ({reason}); refusing to extract "
                        f"anything. The archive is not a genuine RAVDESS archive: {redownload}."
                    )
            keep: dict[str, zipfile.ZipInfo] = {}
            for info in infos:
                base = re.split(r"[/\\]", info.filename)[-1]
                if info.is_dir() or not fnmatch.fnmatchcase(base, pattern):
                    continue
                if base in keep:
                    raise DownloadError(
                        f"{archive}: members {keep[base].filename!r} and {info.filename!r} would both be "
                        f"extracted to {base}; {redownload}."
                    )
                keep[base] = info
            if not keep:
                raise DownloadError(
                    f"{archive}: no member matches {pattern!r} ({len(infos)} members). Check that this is a "
                    f"Video_Speech_Actor_XX.zip archive and the pattern; otherwise {redownload}."
                )
            tmp.mkdir(parents=True)
            for base, info in sorted(keep.items()):
                target = tmp / base
                with zf.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)  # reading to the end checks the CRC
                if target.stat().st_size != info.file_size:
                    raise zipfile.BadZipFile(
                        f"member {info.filename!r}: {target.stat().st_size} bytes, expected {info.file_size}"
                    )
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above); os.replace onto a directory is not portable
        os.replace(tmp, out_dir)
    except DownloadError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except FileNotFoundError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DownloadError(f"archive {archive} not found ({exc}); run the download step first") from exc
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DownloadError(
            f"{archive}: corrupt or truncated zip ({exc}); nothing was extracted. "
            f"The download is damaged: {redownload}."
        ) from exc
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DownloadError(
            f"cannot extract {archive} to {out_dir} ({exc}); nothing was extracted. Check free space and "
            f"permissions of {out_dir.parent}; if they are fine, the archive is damaged: {redownload}."
        ) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sorted(out_dir / base for base in keep)


# ----------------------------------------------------------------------------------------------------- CLI


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m avemotion.download", description=(__doc__ or "").split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fetch", help="download one archive (resumable) and write its record")
    p.add_argument("--url", required=True, help="http(s) or file:// URL")
    p.add_argument("--out", required=True, type=Path, help="archive path to write")
    p.add_argument(
        "--record", required=True, type=Path, help="JSON record to write (name, size, md5, source)"
    )
    p.add_argument("--md5", help="expected md5 (hex); default: the known one for this file name, if any")
    p.add_argument("--size", type=int, help="expected size in bytes")
    p.add_argument("--retries", type=int, default=5, help="attempts without progress before giving up")
    p.add_argument("--timeout", type=float, default=60.0, help="socket timeout in seconds")
    p.add_argument("--quiet", action="store_true", help="no progress lines")

    p = sub.add_parser(
        "local", help="verify an archive already on disk, link it into place, write its record"
    )
    p.add_argument("--src", required=True, type=Path, help="the archive on disk")
    p.add_argument("--out", required=True, type=Path, help="archive path to write (hardlink or copy)")
    p.add_argument("--record", required=True, type=Path, help="JSON record to write")
    p.add_argument("--md5", help="expected md5 (hex); default: the known one for this file name, if any")
    p.add_argument("--size", type=int, help="expected size in bytes")

    p = sub.add_parser("extract", help="extract matching members flat into a new directory")
    p.add_argument("--archive", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="directory to create")
    p.add_argument("--pattern", default=AV_SPEECH_PATTERN, help="fnmatch pattern on member basenames")
    p.add_argument("--record", type=Path, help="verify the archive against this record before extracting")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (1 with the message on stderr for a DownloadError)."""
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "fetch":
            record = fetch(
                args.url,
                args.out,
                expected_md5=args.md5 or KNOWN_MD5.get(args.out.name),
                expected_size=args.size,
                retries=args.retries,
                timeout=args.timeout,
                progress=not args.quiet,
            )
            write_record(args.record, record)
            print(f"{record.name}: {record.size} bytes, md5 {record.md5}", file=sys.stderr)
        elif args.command == "local":
            record = use_local(
                args.src,
                args.out,
                expected_md5=args.md5 or KNOWN_MD5.get(args.src.name),
                expected_size=args.size,
            )
            write_record(args.record, record)
            print(f"{record.name}: {record.size} bytes, md5 {record.md5} (from {args.src})", file=sys.stderr)
        else:
            if args.record is not None:
                verify_record(args.archive, read_record(args.record))
            paths = extract_members(args.archive, args.out, args.pattern)
            print(f"{args.archive}: extracted {len(paths)} files to {args.out}", file=sys.stderr)
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
