"""Audio: decode each clip's audio track (PyAV) and keep the central 88 video frames' audio, mono.

Alignment of the frame window and the sample window (paper: "only the central 88 frames and their
corresponding audio segments are retained"):

- a clip has ``n`` video frames at 30 fps; the kept frames are ``f0 .. f0 + 87`` with
  ``f0 = (n - 88) // 2`` (for odd ``n - 88`` the extra frame is dropped at the end);
- video frame ``k`` is shown during ``[k / 30, (k + 1) / 30)`` s, which at 48 kHz is samples
  ``[1600 k, 1600 (k + 1))`` of the audio track with its time origin at the video's start (time 0);
- so the kept audio is samples ``1600 f0 .. 1600 (f0 + 88) - 1`` = 140,800 samples, the two channels
  averaged to mono.

The decoded track is placed on the container's time axis from the audio frames' timestamps (so an encoder
delay or a late-starting track is handled, not silently shifted). A track that ends at most one video frame
(1600 samples) short of the window, as AAC's last frame can, is padded with zeros; anything shorter is an
error naming the file.

CLI (the ``extract_audio`` rule)::

    python -m avemotion.audio --clips results/clips/clips.csv --actor 1 --out results/audio/Actor_01.npz
"""

from __future__ import annotations

import argparse
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from avemotion import paper
from avemotion.clips import ClipSetError, actor_clips
from avemotion.io import DiskFullError, atomic_save_npz

# How far (in samples) a decoded track may fall short of the window before it is an error.
MAX_SHORTFALL = paper.SAMPLES_PER_FRAME
# What to do about a clip that is not a whole original RAVDESS clip (every AudioError names the clip).
CLIP_REMEDY = (
    "re-download the actor's archive (or replace the copy in data.archives_dir) and rerun to extract its "
    "clips again"
)


class AudioError(ValueError):
    """A clip whose audio cannot give the central window; the message names the file."""


def frame_window(n_frames: int, frames: int = paper.N_FRAMES) -> tuple[int, int]:
    """First and one-past-last kept video frame: the central ``frames`` of ``n_frames``."""
    if n_frames < frames:
        raise ValueError(f"{n_frames} video frames, fewer than the {frames} the window needs")
    first = (n_frames - frames) // 2
    return first, first + frames


def sample_window(n_frames: int, frames: int = paper.N_FRAMES) -> tuple[int, int]:
    """The audio samples (48 kHz) of the central ``frames`` video frames."""
    first, last = frame_window(n_frames, frames)
    return first * paper.SAMPLES_PER_FRAME, last * paper.SAMPLES_PER_FRAME


def probe_video_frames(path: Path) -> int:
    """Number of video frames of an mp4 (container count; by duration x fps when the count is missing)."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise AudioError(f"{path}: no video stream; {CLIP_REMEDY}")
            stream = container.streams.video[0]
            if stream.average_rate and round(float(stream.average_rate)) != paper.FPS:
                raise AudioError(
                    f"{path}: video is {float(stream.average_rate):.2f} fps, expected {paper.FPS}; {CLIP_REMEDY}"
                )
            if stream.frames:
                return int(stream.frames)
            if stream.duration is None or stream.time_base is None:
                raise AudioError(
                    f"{path}: video stream has neither a frame count nor a duration; {CLIP_REMEDY}"
                )
            return round(float(stream.duration * stream.time_base) * paper.FPS)
    except av.error.FFmpegError as e:
        raise AudioError(
            f"{path}: cannot read the video ({e}); the file is corrupt or truncated: {CLIP_REMEDY}"
        ) from None


def to_float(data: np.ndarray) -> np.ndarray:
    """Samples as float32 in [-1, 1]: integer PCM is scaled by its full range (int16 / 32768), float kept."""
    if np.issubdtype(data.dtype, np.integer):
        info = np.iinfo(data.dtype)
        if info.min == 0:  # unsigned (u8): centred on its midpoint
            return ((data.astype(np.float32) - (info.max + 1) / 2) / ((info.max + 1) / 2)).astype(np.float32)
        return (data.astype(np.float32) / -float(info.min)).astype(np.float32)
    return data.astype(np.float32, copy=False)


def decode_audio(path: Path) -> tuple[np.ndarray, int]:
    """Decode the audio track as float32 (channels, samples) on the container time axis (sample 0 = 0 s)."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioError(f"{path}: no audio track (is this a 02-* video-only file?); {CLIP_REMEDY}")
            stream = container.streams.audio[0]
            rate = stream.rate
            chunks: list[tuple[int, np.ndarray]] = []
            for frame in container.decode(stream):
                data = frame.to_ndarray()  # (C, n) planar or (1, n * C) packed
                if not frame.format.is_planar:
                    data = data.reshape(-1, len(frame.layout.channels)).T
                start = 0 if frame.pts is None else round(Fraction(frame.pts) * frame.time_base * rate)
                chunks.append((start, to_float(data)))
    except av.error.FFmpegError as e:
        raise AudioError(
            f"{path}: cannot decode the audio ({e}); the file is corrupt or truncated: {CLIP_REMEDY}"
        ) from None
    if not chunks:
        raise AudioError(f"{path}: the audio track holds no samples; {CLIP_REMEDY}")
    channels = chunks[0][1].shape[0]
    end = max(start + data.shape[1] for start, data in chunks)
    out = np.zeros((channels, max(end, 0)), dtype=np.float32)
    for start, data in chunks:
        lo = max(start, 0)  # samples before time 0 (encoder priming) are dropped
        if start + data.shape[1] > lo:
            out[:, lo : start + data.shape[1]] = data[:, lo - start :]
    return out, rate


def central_audio(path: Path) -> np.ndarray:
    """The central 88 frames' audio of a clip: 140,800 mono samples at 48 kHz (float32)."""
    n_frames = probe_video_frames(path)
    try:
        lo, hi = sample_window(n_frames)
    except ValueError as e:
        raise AudioError(f"{path}: {e}; {CLIP_REMEDY}") from None
    samples, rate = decode_audio(path)
    if rate != paper.SAMPLE_RATE:
        raise AudioError(f"{path}: audio is {rate} Hz, expected {paper.SAMPLE_RATE} Hz; {CLIP_REMEDY}")
    shortfall = hi - samples.shape[1]
    if shortfall > MAX_SHORTFALL:
        raise AudioError(
            f"{path}: audio track has {samples.shape[1]} samples, the window needs {hi} "
            f"(video {n_frames} frames); the file is truncated: {CLIP_REMEDY}"
        )
    if shortfall > 0:
        samples = np.pad(samples, ((0, 0), (0, shortfall)))
    return samples[:, lo:hi].mean(axis=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", type=Path, required=True, help="clip table (clips.csv)")
    parser.add_argument("--actor", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True, help=".npz with 'clips' and 'audio'")
    args = parser.parse_args(argv)
    try:
        table = actor_clips(args.clips, args.actor)
        audio = np.stack([central_audio(Path(p)) for p in table["path"]])
        atomic_save_npz(args.out, clips=table["clip"].to_numpy(dtype=str), audio=audio)
    except (AudioError, ClipSetError, DiskFullError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"actor {args.actor}: {len(table)} clips -> {args.out} {audio.shape}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
