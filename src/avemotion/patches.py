"""Patches for the ResNet backbones: face, eye and mouth crops of chosen video frames, resized, stored as video.

Streams (paper, "Training Samples"; sizes are (height, width) in pixels of the 1280x720 frame):

- ``face``: the fixed centre crop FACE_CROP = 720x720 of the frame (x 280..999, y 0..719), "to remove the
  borders"; it does not depend on the landmarks;
- ``eye_left``: EYE_CROP = 128x128 around the image-left eye, iBUG landmarks 36-41 (the subject's right eye);
- ``eye_right``: 128x128 around the image-right eye, landmarks 42-47;
- ``mouth``: MOUTH_CROP = 110 high x 180 wide around the lips, landmarks 48-67 (outer and inner).

Boxes, per frame, from the tracking contract's 2D landmarks ``x_i, y_i`` (pixels, integer = pixel centre):

- centre = the centre of the stream's landmarks' bounding box, ``(min + max) / 2`` per axis;
- top-left = ``floor(centre - size / 2 + 0.5)`` per axis (``centre - size / 2`` rounded half up), so the box
  covers pixels ``x0 .. x0 + width - 1`` whose middle is within half a pixel of the centre;
- a box reaching outside the frame is *shifted* inside it (its size never changes): x0 is clamped to
  ``0 .. 1280 - width`` and y0 to ``0 .. 720 - height``. Boxes are integers ``(x0, y0, x1, y1)``, x1 - x0 = width.

Face-lost rule: the landmarks come from :func:`avemotion.tracking.clip_track` on the 2D landmark columns
36-67 with config ``tracking.lost``, exactly as for the face features: lost frames take landmarks
interpolated in time (held at the clip's ends), and a clip breaking the rule in its central 88 frames is an
error naming its tracking CSV. The face stream needs no landmarks, but its clip goes through the rule all
the same (a clip without a face is not usable). The lost frames are listed in the clip's sidecar.

Frame sets (0-based video frame indices; ``n`` = the video's frame count, the tracking sidecar's
``video_frames``, which must equal the container's count; tracking rows beyond ``n`` are ignored):

- ``finetune``: k frames evenly spaced over the whole video, ``round_half_up(linspace(0, n - 1, k))`` with
  k = config ``patches.finetune_frames`` (paper.FINETUNE_FRAMES = 20: "20 equally spaced samples from the full
  video"; the demo uses 10); first and last frame included, strictly increasing for n >= k, n < k an error;
- ``central``: the central 88 frames, ``range(*audio.frame_window(n))``, the frames of every other feature.

Each needed frame is decoded once (PyAV, rgb24), each stream's box cropped and resized to ``size`` x
``size`` (config ``patches.size``, paper 224) with torchvision's bilinear resize with antialiasing on uint8,
output uint8. No normalisation here: ImageNet mean/std are applied where the ResNets are trained.

Storage: per actor a folder, per clip ``<clip>/<stream>_<set>.mp4`` (4 streams x 2 sets, one video frame per
patch, in frame order, nominally 30 fps) and a sidecar ``<clip>.json`` beside that folder: frame indices of
both sets, boxes per stream and set, the lost frames (0-based: tracking frame f is index f - 1), size, codec,
crf, the tracking backend. The mp4s are H.264 from x264 (config ``patches.crf``, ``patches.preset``) on one
thread with bit-exact flags, so the same patches give the same bytes on the same software stack:

- crf > 0: ``libx264``, yuv444p (no chroma subsampling on small patches), BT.601 limited range, converted by
  swscale with accurate rounding, bit-exact, both ways; at crf 18 the decoded pixels differ from the patches
  by 0.6-1.1 levels (of 255) on average on the demo videos and 1.4-1.8 on enlarged photograph texture
  (measured; tests/unit/test_patches.py bounds it);
- crf = 0: ``libx264rgb`` in RGB, bit-exact lossless. (yuv444p at crf 0 is *not* lossless: the RGB -> YUV
  -> RGB round trip in 8 bits moves about 30% of the values by 1 or 2 levels, 0.2-0.4 on average.)

x264's macroblock-tree rate control is off (``mbtree=0``): with it, the bytes and the decoded pixels for
patch sizes such as 96, 112, 160, 192 and 224 changed from run to run on the same input (x264 then depends on
uninitialised memory: the output changed with glibc's MALLOC_PERTURB_). Without it the files are about 40%
larger at crf 18 (demo clip, size 224: 277 kB instead of 197 kB).

:func:`read_patches` decodes a stored patch video back into (T, size, size, 3) uint8 and checks it against
the sidecar. The actor folder appears whole or not at all (built beside ``out`` and renamed at the end).

CLI (the ``crop_patches`` rule)::

    python -m avemotion.patches --clips results/clips/clips.csv --actor 1 \
        --tracking results/tracking/Actor_01 --out results/patches/Actor_01 \
        --params '{"size": 224, "crf": 18, "preset": "medium", "lost": {"min_confidence": 0.8, ...}}'
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from av.video.reformatter import ColorRange, Colorspace, Interpolation, VideoReformatter

from avemotion import paper
from avemotion.audio import CLIP_REMEDY, frame_window, probe_video_frames
from avemotion.clips import actor_clips
from avemotion.io import built_dir, rgb_frames
from avemotion.tracking import LostRule, clip_track, landmarks_2d, read_openface_csv

STREAMS = ("face", "eye_left", "eye_right", "mouth")
FRAME_SETS = ("finetune", "central")
CROPS: dict[str, tuple[int, int]] = {  # (height, width)
    "face": paper.FACE_CROP,
    "eye_left": paper.EYE_CROP,
    "eye_right": paper.EYE_CROP,
    "mouth": paper.MOUTH_CROP,
}
LANDMARKS: dict[str, range] = {"eye_left": range(36, 42), "eye_right": range(42, 48), "mouth": range(48, 68)}
TRACKED = range(36, 68)  # the landmarks the boxes use; the face-lost rule checks these columns
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
_SWS_FLAGS = Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.BITEXACT
_BITEXACT_CODEC = 1 << 23  # AV_CODEC_FLAG_BITEXACT: no encoder version string in the stream
_BITEXACT_FORMAT = 0x0400  # AVFMT_FLAG_BITEXACT: no muxer version string in the file
_AVCOL_SPC_SMPTE170M = 6  # BT.601, tagged on the yuv444p stream so other players convert the same way


class PatchError(ValueError):
    """A clip whose patches cannot be made or read; the message names the file and what to do."""


@dataclass(frozen=True)
class PatchConfig:
    """Config ``patches`` (size, crf, preset) and the face-lost rule (``tracking.lost``)."""

    lost: LostRule
    size: int = paper.PATCH_SIZE
    crf: int = 18
    preset: str = "medium"
    finetune_frames: int = paper.FINETUNE_FRAMES

    @classmethod
    def from_params(cls, params: dict) -> PatchConfig:
        params = dict(params)
        unknown = sorted(set(params) - {"lost", "size", "crf", "preset", "finetune_frames"})
        if unknown:
            raise ValueError(
                f"patches: unknown keys {unknown} (expected size, crf, preset, finetune_frames, lost)"
            )
        if "lost" not in params:
            raise ValueError("patches: the params need 'lost', the face-lost rule (config tracking.lost)")
        try:
            lost = LostRule(**params.pop("lost"))
        except TypeError as e:
            raise ValueError(f"tracking.lost: {e}") from None
        cfg = cls(lost=lost, **params)
        if type(cfg.size) is not int or not 16 <= cfg.size <= 1024:
            raise ValueError(f"patches.size: {cfg.size!r} is not an integer in 16..1024")
        if type(cfg.crf) is not int or not 0 <= cfg.crf <= 51:
            raise ValueError(f"patches.crf: {cfg.crf!r} is not an integer in 0..51")
        if cfg.preset not in PRESETS:
            raise ValueError(f"patches.preset: {cfg.preset!r} is not one of {PRESETS}")
        if type(cfg.finetune_frames) is not int or not 2 <= cfg.finetune_frames <= paper.N_FRAMES:
            raise ValueError(f"patches.finetune_frames: {cfg.finetune_frames!r} is not an integer in 2..88")
        return cfg


# ------------------------------------------------------------------------------------------------ boxes


def landmark_box(
    points: np.ndarray, crop: tuple[int, int], frame_size: tuple[int, int] = paper.VIDEO_SIZE
) -> np.ndarray:
    """(frames, 4) int64 boxes ``(x0, y0, x1, y1)`` of size ``crop`` (height, width) centred on the bounding
    box of ``points`` (frames, k, 2) (x, y pixels), shifted inside the ``frame_size`` (width, height) frame."""
    points = np.asarray(points, dtype=np.float64)
    if not np.isfinite(points).all():
        raise ValueError("landmarks must be finite (fill lost frames first)")
    size = np.array(crop[::-1])  # (width, height), like the points' (x, y)
    frame = np.array(frame_size)
    if (size > frame).any():
        raise ValueError(f"a {crop[0]}x{crop[1]} crop does not fit a {frame_size[0]}x{frame_size[1]} frame")
    centre = (points.min(axis=1) + points.max(axis=1)) / 2  # (frames, 2)
    top_left = np.floor(centre - size / 2 + 0.5).astype(np.int64)
    top_left = np.clip(top_left, 0, frame - size)  # shift, never shrink
    return np.concatenate([top_left, top_left + size], axis=1)


def centre_box(crop: tuple[int, int], frame_size: tuple[int, int] = paper.VIDEO_SIZE) -> np.ndarray:
    """(4,) int64 box of size ``crop`` (height, width) in the middle of the frame (extra pixel at the end)."""
    (h, w), (width, height) = crop, frame_size
    if h > height or w > width:
        raise ValueError(f"a {h}x{w} crop does not fit a {width}x{height} frame")
    x0, y0 = (width - w) // 2, (height - h) // 2
    return np.array([x0, y0, x0 + w, y0 + h], dtype=np.int64)


def stream_boxes(
    landmarks_xy: np.ndarray, frame_size: tuple[int, int] = paper.VIDEO_SIZE
) -> dict[str, np.ndarray]:
    """Per stream, (frames, 4) int64 boxes ``(x0, y0, x1, y1)`` from (frames, 68, 2) landmarks (x, y pixels).

    Only the landmarks of the eye and mouth streams are read (others may be NaN); the face box is the fixed
    centre crop, repeated for every frame.
    """
    landmarks_xy = np.asarray(landmarks_xy, dtype=np.float64)
    if landmarks_xy.ndim != 3 or landmarks_xy.shape[1:] != (68, 2):
        raise ValueError(f"expected (frames, 68, 2) landmarks, got {landmarks_xy.shape}")
    n = len(landmarks_xy)
    boxes = {"face": np.tile(centre_box(CROPS["face"], frame_size), (n, 1))}
    for stream, points in LANDMARKS.items():
        boxes[stream] = landmark_box(landmarks_xy[:, list(points)], CROPS[stream], frame_size)
    return {stream: boxes[stream] for stream in STREAMS}


# ------------------------------------------------------------------------------------------ frame sets


def finetune_indices(n: int, k: int = paper.FINETUNE_FRAMES) -> np.ndarray:
    """``k`` 0-based frame indices evenly spaced over ``n`` frames: round-half-up of linspace(0, n - 1, k),
    computed in integers (exact halves round up, no float error)."""
    if k < 2:
        raise ValueError(f"need at least 2 fine-tuning frames, got {k}")
    if n < k:
        raise ValueError(f"{n} video frames, fewer than the {k} fine-tuning frames")
    i = np.arange(k, dtype=np.int64)
    # round(i (n - 1) / (k - 1)) half up = floor((2 i (n - 1) + (k - 1)) / (2 (k - 1)))
    return (2 * i * (n - 1) + (k - 1)) // (2 * (k - 1))


def central_indices(n: int) -> np.ndarray:
    """The central 88 0-based frame indices of ``n`` frames (``audio.frame_window``)."""
    return np.arange(*frame_window(n), dtype=np.int64)


def frame_sets(n: int, k: int = paper.FINETUNE_FRAMES) -> dict[str, np.ndarray]:
    """Both frame sets of a clip of ``n`` frames, in FRAME_SETS order."""
    return {"finetune": finetune_indices(n, k), "central": central_indices(n)}


# ------------------------------------------------------------------------------------- crop and resize


def crop(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The pixels of ``box`` (x0, y0, x1, y1) of an (H, W, 3) frame, (y1 - y0, x1 - x0, 3); the box must be
    inside the frame."""
    x0, y0, x1, y1 = (int(v) for v in box)
    height, width = frame.shape[:2]
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(f"box {(x0, y0, x1, y1)} is not inside the {width}x{height} frame")
    return frame[y0:y1, x0:x1]


def resize_patch(patch: np.ndarray, size: int) -> np.ndarray:
    """An (h, w, 3) uint8 patch resized to (size, size, 3) uint8: bilinear with antialiasing, torch's native
    uint8 kernel (what torchvision's ``resize`` runs for a uint8 CPU image, byte for byte; called directly,
    so a patch job does not import torchvision: 1.2 s of its start-up)."""
    image = torch.from_numpy(np.ascontiguousarray(patch)).permute(2, 0, 1)[None]  # (1, 3, h, w)
    out = F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out[0].permute(1, 2, 0).contiguous().numpy()  # (size, size, 3)


def frame_patches(frame: np.ndarray, boxes: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """One frame's patches: per stream its (4,) box cropped and resized to (size, size, 3) uint8."""
    return {stream: resize_patch(crop(frame, box), size) for stream, box in boxes.items()}


def cut_patches(
    video: Path, boxes: dict[str, np.ndarray], sets: dict[str, np.ndarray], size: int
) -> dict[tuple[str, str], np.ndarray]:
    """Decode ``video`` once (rgb24) and cut, for every (stream, set), the patches of the set's frames:
    (len(set), size, size, 3) uint8. ``boxes`` hold one row per video frame; decoding stops after the last
    needed frame."""
    last = max(int(indices.max()) for indices in sets.values())
    positions = {name: {int(f): j for j, f in enumerate(indices)} for name, indices in sets.items()}
    out = {
        (stream, name): np.empty((len(indices), size, size, 3), dtype=np.uint8)
        for stream in boxes
        for name, indices in sets.items()
    }
    decoded = 0
    try:
        with av.open(str(video)) as container:
            for index, rgb in enumerate(rgb_frames(container.decode(container.streams.video[0]))):
                decoded = index + 1
                targets = [(name, pos[index]) for name, pos in positions.items() if index in pos]
                if targets:  # rgb: (H, W, 3)
                    patches = frame_patches(rgb, {s: b[index] for s, b in boxes.items()}, size)
                    for name, j in targets:
                        for stream, patch in patches.items():
                            out[stream, name][j] = patch
                if index == last:
                    break
    except av.error.FFmpegError as e:
        raise PatchError(
            f"{video}: cannot decode the video ({e}); the file is corrupt or truncated"
        ) from None
    if decoded <= last:
        raise PatchError(
            f"{video}: only {decoded} frames decode, frame {last} is needed; the file is truncated "
            "(re-extract the clips)"
        )
    return out


# --------------------------------------------------------------------------------------------- storage


def codec_of(crf: int) -> tuple[str, str]:
    """(x264 encoder, pixel format) of the stored patches: RGB lossless at crf 0, else yuv444p."""
    return ("libx264rgb", "rgb24") if crf == 0 else ("libx264", "yuv444p")


def encode_patches(path: Path, patches: np.ndarray, crf: int = 18, preset: str = "medium") -> int:
    """Write (T, S, S, 3) uint8 patches as an H.264 mp4, one frame per patch (see the module docstring);
    returns the bytes written."""
    patches = np.asarray(patches)
    if patches.dtype != np.uint8 or patches.ndim != 4 or patches.shape[-1] != 3 or len(patches) == 0:
        raise ValueError(
            f"expected (T, H, W, 3) uint8 patches with T > 0, got {patches.dtype} {patches.shape}"
        )
    codec, pix_fmt = codec_of(crf)
    # One thread: bytes independent of the cores. No macroblock-tree rate control: with it, x264's output for
    # sizes like 96, 112, 160, 192, 224 depends on uninitialised memory (measured: the same patches gave
    # different bytes run to run); without it the bytes repeat.
    options = {"crf": str(crf), "preset": preset, "threads": "1", "x264-params": "mbtree=0"}
    with av.open(str(path), "w", format="mp4") as container:
        container.flags |= _BITEXACT_FORMAT
        stream = container.add_stream(codec, rate=paper.FPS, options=options)
        stream.height, stream.width = patches.shape[1:3]
        stream.pix_fmt = pix_fmt
        stream.codec_context.thread_count = 1
        stream.codec_context.flags |= _BITEXACT_CODEC
        if pix_fmt == "yuv444p":
            stream.codec_context.colorspace = _AVCOL_SPC_SMPTE170M
            stream.codec_context.color_range = ColorRange.MPEG
        scaler = VideoReformatter()  # one swscale context for all frames (see io.rgb_frames)
        for i, patch in enumerate(patches):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(patch), format="rgb24")
            if pix_fmt == "yuv444p":
                frame = scaler.reformat(
                    frame,
                    format="yuv444p",
                    src_colorspace=Colorspace.ITU601,
                    dst_colorspace=Colorspace.ITU601,
                    dst_color_range=ColorRange.MPEG,
                    interpolation=_SWS_FLAGS,
                )
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path.stat().st_size


def decode_patches(path: Path) -> np.ndarray:
    """Every frame of a stored patch video as (T, H, W, 3) uint8 RGB (the inverse of encode_patches)."""
    frames = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            options = {}
            if stream.codec_context.pix_fmt == "yuv444p":  # libx264rgb (crf 0) stores RGB as is
                options = {
                    "src_colorspace": Colorspace.ITU601,
                    "dst_colorspace": Colorspace.ITU601,
                    "src_color_range": ColorRange.MPEG,
                    "interpolation": _SWS_FLAGS,
                }
            frames = list(rgb_frames(container.decode(stream), **options))
    except (av.error.FFmpegError, IndexError) as e:
        raise PatchError(f"{path}: not a readable patch video ({e}); re-run the crop_patches rule") from None
    if not frames:
        raise PatchError(f"{path}: the patch video holds no frame; re-run the crop_patches rule")
    return np.stack(frames)


def patch_path(actor_dir: Path, clip: str, stream: str, frame_set: str) -> Path:
    if stream not in STREAMS:
        raise ValueError(f"unknown stream {stream!r}, expected one of {STREAMS}")
    if frame_set not in FRAME_SETS:
        raise ValueError(f"unknown frame set {frame_set!r}, expected one of {FRAME_SETS}")
    return Path(actor_dir) / clip / f"{stream}_{frame_set}.mp4"


def read_sidecar(actor_dir: Path, clip: str) -> dict:
    path = Path(actor_dir) / f"{clip}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise PatchError(f"{path}: unreadable patch sidecar ({e}); re-run the crop_patches rule") from None


def read_patches(actor_dir: Path, clip: str, stream: str, frame_set: str) -> np.ndarray:
    """A clip's stored patches of ``stream`` for ``frame_set``: (T, size, size, 3) uint8, T and size checked
    against the clip's sidecar."""
    path = patch_path(actor_dir, clip, stream, frame_set)
    meta = read_sidecar(actor_dir, clip)
    if not path.is_file():
        raise PatchError(f"{path}: patch video missing; re-run the crop_patches rule for this actor")
    patches = decode_patches(path)
    expected = (len(meta["frames"][frame_set]), meta["size"], meta["size"], 3)
    if patches.shape != expected:
        raise PatchError(
            f"{path}: decodes to {patches.shape}, its sidecar says {expected}; the file is truncated or "
            "stale, re-run the crop_patches rule"
        )
    return patches


# ------------------------------------------------------------------------------------------------ clips


def read_tracking(csv: Path, video: Path) -> tuple[pd.DataFrame, dict, int]:
    """A clip's tracking contract, its sidecar, and the video's frame count (the sidecar's, checked against
    the video's container)."""
    sidecar_path = csv.with_suffix(".json")
    if not csv.is_file():
        raise PatchError(
            f"{csv}: tracking CSV missing for {video.name}; run the extract_openface rule for this actor first"
        )
    try:
        sidecar = json.loads(sidecar_path.read_text())
        n_frames = int(sidecar["video_frames"])
    except (OSError, ValueError, KeyError) as e:
        raise PatchError(f"{sidecar_path}: unreadable tracking sidecar ({e}); re-run the tracking") from None
    container_frames = probe_video_frames(video)
    if container_frames != n_frames:
        raise PatchError(
            f"{sidecar_path}: tracked {n_frames} video frames but {video} has {container_frames}; the tracking "
            "was made from another video, re-run the tracking"
        )
    return read_openface_csv(csv), sidecar, n_frames


def clip_landmarks(
    table: pd.DataFrame, n_frames: int, rule: LostRule, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """(n_frames, 68, 2) landmarks (x, y; only 36-67 filled, the rest NaN) with lost frames interpolated by
    the face-lost rule, and the lost mask (n_frames,). A TrackingError naming ``where`` if the rule fails."""
    columns = tuple(landmarks_2d(slice(TRACKED.start, TRACKED.stop)))  # x_36, y_36, x_37, ...
    values, lost = clip_track(table, n_frames, rule, columns, where)
    landmarks = np.full((n_frames, 68, 2), np.nan)
    landmarks[:, TRACKED.start : TRACKED.stop] = values.reshape(n_frames, len(TRACKED), 2)
    return landmarks, lost


def crop_clip(clip: str, video: Path, csv: Path, clip_dir: Path, cfg: PatchConfig) -> dict:
    """Cut and store one clip's 8 patch videos into ``clip_dir``; returns the clip's sidecar."""
    table, tracking_sidecar, n_frames = read_tracking(csv, video)
    landmarks, lost = clip_landmarks(table, n_frames, cfg.lost, where=f"{csv} (clip {clip})")
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        frame_size = (stream.codec_context.width, stream.codec_context.height)
    if frame_size != paper.VIDEO_SIZE:
        raise PatchError(
            f"{video}: frames are {frame_size[0]}x{frame_size[1]}, the crop sizes are pixels of RAVDESS's "
            f"{paper.VIDEO_SIZE[0]}x{paper.VIDEO_SIZE[1]} frames; {CLIP_REMEDY}"
        )
    try:
        sets = frame_sets(n_frames, cfg.finetune_frames)
    except ValueError as e:
        raise PatchError(f"{video}: {e}") from None
    boxes = stream_boxes(landmarks, frame_size)
    patches = cut_patches(video, boxes, sets, cfg.size)
    clip_dir.mkdir(parents=True)
    written = {}
    for (stream, name), array in patches.items():
        written[f"{stream}_{name}.mp4"] = encode_patches(
            clip_dir / f"{stream}_{name}.mp4", array, cfg.crf, cfg.preset
        )
    codec, pix_fmt = codec_of(cfg.crf)
    return {
        "clip": clip,
        "video": str(video),
        "video_frames": n_frames,
        "tracking": {"csv": str(csv), "backend": tracking_sidecar.get("backend")},
        "size": cfg.size,
        "codec": codec,
        "pix_fmt": pix_fmt,
        "crf": cfg.crf,
        "preset": cfg.preset,
        "crops": {stream: list(CROPS[stream]) for stream in STREAMS},  # (height, width)
        "frames": {name: indices.tolist() for name, indices in sets.items()},
        "boxes": {
            stream: {name: boxes[stream][indices].tolist() for name, indices in sets.items()}
            for stream in STREAMS
        },
        "lost_frames": np.flatnonzero(lost).tolist(),  # 0-based, interpolated landmarks
        "bytes": written,
    }


def crop_actor(table: pd.DataFrame, tracking_dir: Path, out: Path, params: dict) -> int:
    """Crop every clip of ``table`` (one actor's rows of clips.csv) into the folder ``out``, reading the
    tracking contracts in ``tracking_dir``. The folder appears whole or not at all: it is built beside
    ``out`` and renamed at the end. Returns the number of clips."""
    cfg = PatchConfig.from_params(params)
    out, tracking_dir = Path(out), Path(tracking_dir)
    with built_dir(out) as build:
        for row in table.itertuples(index=False):
            sidecar = crop_clip(
                row.clip, Path(row.path), tracking_dir / f"{row.clip}.csv", build / row.clip, cfg
            )
            (build / f"{row.clip}.json").write_text(
                json.dumps(sidecar, sort_keys=True, separators=(",", ":")) + "\n"
            )
    return len(table)


def footprint(actor_dir: Path) -> dict:
    """Disk use of an actor's patch folder: clips, total bytes (mp4s and sidecars), and bytes per stream and
    frame set summed over the clips."""
    actor_dir = Path(actor_dir)
    clips = sorted(p for p in actor_dir.iterdir() if p.is_dir())
    per = {stream: {name: 0 for name in FRAME_SETS} for stream in STREAMS}
    for clip in clips:
        for stream in STREAMS:
            for name in FRAME_SETS:
                per[stream][name] += patch_path(actor_dir, clip.name, stream, name).stat().st_size
    total = sum(p.stat().st_size for p in actor_dir.rglob("*") if p.is_file())
    return {"clips": len(clips), "total": total, "bytes": per}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", type=Path, required=True, help="clip table (clips.csv)")
    parser.add_argument("--actor", type=int, required=True)
    parser.add_argument("--tracking", type=Path, required=True, help="the actor's tracking folder")
    parser.add_argument("--out", type=Path, required=True, help="folder to create (patch videos + sidecars)")
    parser.add_argument(
        "--params", required=True, help="JSON of config patches plus 'lost' (config tracking.lost)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads for resizing")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        table = actor_clips(args.clips, args.actor)
        n = crop_actor(table, args.tracking, args.out, json.loads(args.params))
    except (ValueError, OSError) as e:  # PatchError, TrackingError, AudioError, ClipSetError, bad --params
        print(f"error: {e}", file=sys.stderr)
        return 1
    use = footprint(args.out)
    streams = ", ".join(f"{s} {sum(use['bytes'][s].values()) / 1e6:.2f}" for s in STREAMS)
    print(
        f"actor {args.actor}: {n} clips -> {args.out}, {use['total']} bytes written "
        f"({use['total'] / max(n, 1) / 1e3:.1f} kB per clip; MB per stream: {streams})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
