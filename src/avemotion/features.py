"""Per-clip feature arrays: one array (clips, frames, dims) in clip-table order plus an index, per feature.

Each registry feature is built from its ``source``: ``audio`` (the central 140,800 samples per clip, from
``avemotion.audio``) or ``tracking`` (the per-clip tracking contract, ``avemotion.tracking``; the face
features themselves are defined in ``avemotion.face``).

Log-mel spectrogram (LMS, paper): 24 mel bands, window = FFT = 4800 samples (100 ms), hop 1600 (one video
frame), maximum frequency 17 kHz, natural log of the power. The paper's settings give 89 frames with a centred
STFT and 86 without, not the 88 it reports; ``frames_rule`` (config ``features.lms.frames_rule``) decides:

- ``frame_centred`` (default): reflect-pad one video frame (1600 samples) on each side of the 140,800-sample
  window and take an uncentred STFT: 1 + (144,000 - 4800) / 1600 = 88 frames, frame k spanning samples
  [1600 k - 1600, 1600 k + 3200), i.e. centred on video frame k's own audio [1600 k, 1600 k + 1600).
- ``centre_drop_last``: torch's centred STFT (2400 samples reflect-padded per side, 89 frames, frame j centred
  on sample 1600 j, the boundary between video frames j - 1 and j), the last frame dropped.

CLI (the ``extract_features`` rule)::

    python -m avemotion.features lms --clips results/clips/clips.csv --inputs results/audio/*.npz \
        --params '{"n_mels": 24, ...}' --out results/features/lms/features.npy --index .../index.csv
    python -m avemotion.features face_kpd --clips results/clips/clips.csv --inputs results/tracking/Actor_* \
        --params '{"normalize": "neutral", "lost": {...}}' --out ... --index ...
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchaudio

from avemotion import face, paper, registry
from avemotion.audio import frame_window
from avemotion.io import DiskFullError, atomic_group, write_npy
from avemotion.tracking import AU_INTENSITY, LostRule, TrackingError, clip_track, read_openface_csv


@dataclass(frozen=True)
class LMSConfig:
    n_mels: int = 24
    n_fft: int = 4800
    hop_length: int = 1600
    f_min: float = 0.0
    f_max: float = 17000.0
    frames_rule: str = "frame_centred"
    log_floor: float = 1e-6


def log_mel(audio: np.ndarray, cfg: LMSConfig, frames: int = paper.N_FRAMES) -> np.ndarray:
    """(N, 140,800) mono at 48 kHz -> (N, frames, n_mels) float32 log-mel power."""
    x = torch.as_tensor(audio, dtype=torch.float32)
    if x.ndim != 2:
        raise ValueError(f"expected (clips, samples) audio, got shape {tuple(x.shape)}")
    if cfg.frames_rule == "frame_centred":
        pad = cfg.hop_length
        x = torch.nn.functional.pad(x[:, None], (pad, pad), mode="reflect")[:, 0]
        center = False
    elif cfg.frames_rule == "centre_drop_last":
        center = True
    else:
        raise ValueError(f"features.lms.frames_rule: unknown rule {cfg.frames_rule!r}")
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=paper.SAMPLE_RATE,
        n_fft=cfg.n_fft,
        win_length=cfg.n_fft,
        hop_length=cfg.hop_length,
        f_min=cfg.f_min,
        f_max=cfg.f_max,
        n_mels=cfg.n_mels,
        power=2.0,
        center=center,
        pad_mode="reflect",
    )
    spec = mel(x)  # (N, n_mels, T)
    if spec.shape[-1] < frames:
        raise ValueError(f"{spec.shape[-1]} spectrogram frames from {x.shape[-1]} samples, need {frames}")
    spec = spec[..., :frames]
    return torch.log(spec + cfg.log_floor).transpose(1, 2).contiguous().numpy()  # (N, T, n_mels)


def load_audio(table: pd.DataFrame, npz_paths: list[Path]) -> np.ndarray:
    """The central-window audio of every clip in ``table`` (in its order) from the per-actor .npz files."""
    by_clip: dict[str, np.ndarray] = {}
    for path in npz_paths:
        with np.load(path) as data:
            by_clip.update(zip(data["clips"].tolist(), data["audio"], strict=True))
    missing = [c for c in table["clip"] if c not in by_clip]
    if missing:
        raise ValueError(f"no extracted audio for {len(missing)} clips, e.g. {missing[:3]}")
    return np.stack([by_clip[c] for c in table["clip"]])


# An extractor: (clip table, per-actor inputs, options) -> (features (N, frames, dims), per-clip columns for
# the index, e.g. how many window frames of each clip were interpolated over a lost face).
Extracted = tuple[np.ndarray, dict[str, np.ndarray]]


def lms_feature(table: pd.DataFrame, inputs: list[Path], params: dict) -> Extracted:
    return log_mel(load_audio(table, inputs), LMSConfig(**params)), {}


@dataclass(frozen=True)
class FaceConfig:
    """Options of a tracking feature (config ``features.<key>``) and the face-lost rule (``tracking.lost``)."""

    lost: LostRule
    normalize: str = "neutral"  # KPD features: "neutral" (paper) or "none"

    @classmethod
    def from_params(cls, params: dict) -> FaceConfig:
        params = dict(params)
        lost = LostRule(**params.pop("lost"))
        if params.get("normalize", "neutral") not in face.NORMALIZE:
            raise ValueError(f"normalize: {params['normalize']!r} is not one of {face.NORMALIZE}")
        return cls(lost=lost, **params)


class ClipTracks:
    """Per-clip tracking contracts under the actors' tracking folders, read on demand (the last one is kept:
    each clip is read once as itself and once more if it is a neutral reference)."""

    def __init__(self, folders: list[Path], rule: LostRule):
        self.paths = {p.stem: p for folder in folders for p in sorted(Path(folder).glob("*.csv"))}
        self.rule = rule
        self._cache: dict[str, tuple[pd.DataFrame, int]] = {}

    def read(self, clip: str) -> tuple[pd.DataFrame, int]:
        """The clip's contract table and its video's frame count (from the sidecar)."""
        if clip not in self._cache:
            path = self.paths.get(clip)
            if path is None:
                raise TrackingError(f"no tracking CSV for clip {clip} in the tracking folders")
            sidecar = path.with_suffix(".json")
            try:
                n_frames = int(json.loads(sidecar.read_text())["video_frames"])
            except (OSError, ValueError, KeyError) as e:
                raise TrackingError(
                    f"{sidecar}: unreadable tracking sidecar ({e}); re-run the tracking"
                ) from None
            self._cache = {clip: (read_openface_csv(path), n_frames)}  # one clip at a time: they are large
        return self._cache[clip]

    def values(self, clip: str, columns: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """(n_frames, len(columns)) values with lost frames filled, and the lost mask."""
        table, n_frames = self.read(clip)
        return clip_track(table, n_frames, self.rule, columns, where=str(self.paths[clip]))


def face_feature(key: str):
    """The extractor of the tracking feature ``key``: (table, tracking folders, params) -> (N, 88, dims)."""
    spec = face.FACE_FEATURES[key]

    def extract(table: pd.DataFrame, inputs: list[Path], params: dict) -> Extracted:
        cfg = FaceConfig.from_params(params)
        tracks = ClipTracks(inputs, cfg.lost)
        references: dict[str, np.ndarray] = {}
        out = np.empty((len(table), paper.N_FRAMES, spec.dims), dtype=np.float32)
        lost_in_window = np.zeros(len(table), dtype=int)
        for i, row in enumerate(table.itertuples(index=False)):
            values, lost = tracks.values(row.clip, spec.columns)
            first, last = frame_window(len(values))
            lost_in_window[i] = lost[first:last].sum()
            reference = None
            if spec.normalizable and cfg.normalize == "neutral":
                ref_clip = face.reference_clip(row.actor, row.statement)
                if ref_clip not in references:
                    references[ref_clip] = neutral_reference(tracks, ref_clip, spec.columns)
                reference = references[ref_clip]
            out[i] = spec.compute(values[first:last], reference)
        return out, {"lost_frames": lost_in_window}

    return extract


def neutral_reference(tracks: ClipTracks, clip: str, columns: tuple[str, ...]) -> np.ndarray:
    """``columns`` in the most neutral tracked frame (lowest summed AU intensity) of the reference clip."""
    au = tuple(f"AU{n}_r" for n in AU_INTENSITY)
    values, lost = tracks.values(clip, columns + au)
    frame = face.neutral_frame(values[:, len(columns) :], lost)
    return values[frame, : len(columns)]


EXTRACTORS = {"lms": lms_feature} | {key: face_feature(key) for key in face.FACE_FEATURES}


def save_features(out: Path, index: Path, features: np.ndarray, rows: pd.DataFrame) -> None:
    """A feature array and its index (``rows``: one per array row), both or neither: on a full disk the
    earlier pair stays as it was (:class:`avemotion.io.DiskFullError`, naming the file that did not fit)."""
    with atomic_group() as stage:
        write_npy(stage(out), features)
        stage(index).write_text(rows.to_csv(index=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("feature", choices=sorted(EXTRACTORS))
    parser.add_argument("--clips", type=Path, required=True)
    parser.add_argument(
        "--inputs", type=Path, nargs="+", required=True, help="per-actor audio .npz or tracking folders"
    )
    parser.add_argument("--params", required=True, help="JSON of the feature's config section")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    table = pd.read_csv(args.clips)
    try:
        features, per_clip = EXTRACTORS[args.feature](table, args.inputs, json.loads(args.params))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    frames = registry.get(args.feature).frames
    bad = ~np.isfinite(features).all(axis=(1, 2))
    if features.shape[1] != frames or bad.any():
        print(
            f"error: {args.feature} {features.shape} (expected {frames} frames), non-finite clips: "
            f"{table['clip'][bad].tolist()[:5]}",
            file=sys.stderr,
        )
        return 1
    index = pd.DataFrame({"clip": table["clip"], "row": np.arange(len(table)), **per_clip})
    try:
        save_features(args.out, args.index, features.astype(np.float32), index)
    except DiskFullError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.feature}: {features.shape} -> {args.out}")
    if "lost_frames" in per_clip:
        lost = per_clip["lost_frames"]
        print(
            f"face lost (interpolated) in {int(lost.sum())} of {lost.size * frames} window frames, in "
            f"{int((lost > 0).sum())} clips; per clip in index column lost_frames"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
