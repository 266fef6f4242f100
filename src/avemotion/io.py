"""Atomic file writes: every output appears whole or not at all (temp file in the same folder + os.replace).
And the one way video frames become RGB arrays (:func:`rgb_frames`)."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed.

    A process killed outright (SIGKILL) cannot remove its temporary file: the next write of the same ``path``
    does (one job writes an output at a time, so any such file is a dead writer's)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp's 0o600 would make every output owner-only
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write_text(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_save_npy(path: Path | str, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def atomic_save_npz(path: Path | str, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def sha256_file(path: Path | str) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def rgb_frames(frames: Iterable, **options) -> Iterator[np.ndarray]:
    """PyAV video frames as (H, W, 3) uint8 RGB arrays, converted through one swscale context.

    ``frame.to_ndarray(format="rgb24")`` builds a new swscale context for every frame: measured 4 ms more per
    1280x720 frame, and 27x slower for a 24x24 patch (the context set-up dwarfs the conversion). ``options``
    go to ``VideoReformatter.reformat`` (colorspace, range, interpolation); the pixels are the same.
    """
    from av.video.reformatter import VideoReformatter  # PyAV is only needed by the video stages

    scaler = VideoReformatter()
    for frame in frames:
        yield scaler.reformat(frame, format="rgb24", **options).to_ndarray()
