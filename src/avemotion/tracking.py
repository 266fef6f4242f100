"""Face tracking: the one tracking contract (an OpenFace 2.x CSV per clip), its parsers, and the face-lost rule.

The contract is the column set of OpenFace 2.x ``FeatureExtraction`` (Baltrusaitis et al. 2018) that the
features need, in OpenFace's order, one row per video frame (``frame`` counts from 1):

- ``frame, timestamp, confidence, success``;
- gaze: ``gaze_0_x/y/z`` (image-left eye), ``gaze_1_x/y/z`` (image-right eye), unit vectors in camera
  coordinates (x right, y down, z away from the camera), and ``gaze_angle_x/y`` (radians, both eyes averaged);
- 56 eye landmarks ``eye_lmk_{x,y}_i`` (pixels) and ``eye_lmk_{X,Y,Z}_i`` (mm, camera coordinates): per eye
  (0-27 image-left, 28-55 image-right) 8 iris points, 12 eyelid points (8-19), 8 pupil points (20-27);
- head pose ``pose_Tx, pose_Ty, pose_Tz`` (mm) and ``pose_Rx, pose_Ry, pose_Rz`` (radians: pitch, yaw, roll;
  rotation R = Rx Ry Rz);
- the 68 iBUG landmarks ``x_i, y_i`` (pixels) and ``X_i, Y_i, Z_i`` (mm);
- 17 action-unit intensities ``AU*_r`` (0-5) and 18 presences ``AU*_c`` (0/1).

Two real variants are parsed: raw ``FeatureExtraction`` output (``frame, face_id, timestamp, confidence,
success, ...``, separated by ", ") and the RAVDESS facial-tracking release (Zenodo 3255102, OpenFace 2.1.0:
712 columns, no ``face_id``/``success``, separated by ","). Columns outside the contract (``p_*`` shape
parameters, ``face_id``) are dropped; a missing ``success`` column (the release) counts every row as tracked,
and the rule below still catches untracked frames by their confidence or their all-zero landmarks.

Face-lost rule (config ``tracking.lost``), applied where features are built, never silently:

- frame ``f`` (1..N, N = the video's frame count) is *lost* when its row is missing, ``success`` is 0,
  ``confidence`` is below ``min_confidence``, any value the features use is not finite, or all its 2D
  landmarks are 0 (how OpenFace writes an untracked frame);
- lost frames are filled by linear interpolation in time between the nearest tracked frames before and
  after (the whole clip is used, so window edges borrow from outside the window); a lost run touching the
  start or end of the clip repeats the nearest tracked frame;
- a clip whose central 88-frame window has a lost run longer than ``max_run`` frames or more than
  ``max_fraction`` of its frames lost is an error naming the clip and the frames, never interpolated over;
- rows for frames beyond N (a decoder counting one more frame) are ignored and counted.

Every clip's tracking CSV has a JSON sidecar (``<clip>.json``) naming the backend, its version and flags,
the video's frame count, the rows written, the lost frames, and the contract columns the backend cannot
produce (written as empty cells, never made-up values).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from avemotion.audio import AudioError, frame_window, probe_video_frames
from avemotion.clips import ClipSetError, actor_clips
from avemotion.download import DownloadError, read_record, verify_record
from avemotion.io import DiskFullError, atomic_write_text, built_dir

N_LANDMARKS = 68
N_EYE_LANDMARKS = 56  # 28 per eye
AU_INTENSITY = (
    "01", "02", "04", "05", "06", "07", "09", "10", "12", "14", "15", "17", "20", "23", "25", "26", "45",
)  # fmt: skip
AU_PRESENCE = (*AU_INTENSITY[:-1], "28", "45")  # OpenFace detects AU28 (lip suck) but has no intensity for it

META_COLUMNS = ("frame", "timestamp", "confidence", "success")
GAZE_COLUMNS = (*tuple(f"gaze_{e}_{a}" for e in (0, 1) for a in "xyz"), "gaze_angle_x", "gaze_angle_y")
EYE_COLUMNS = tuple(f"eye_lmk_{a}_{i}" for a in "xyXYZ" for i in range(N_EYE_LANDMARKS))
POSE_COLUMNS = ("pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz")
LANDMARK_COLUMNS = tuple(f"{a}_{i}" for a in "xyXYZ" for i in range(N_LANDMARKS))
AU_COLUMNS = tuple(f"AU{n}_r" for n in AU_INTENSITY) + tuple(f"AU{n}_c" for n in AU_PRESENCE)
CONTRACT_COLUMNS = META_COLUMNS + GAZE_COLUMNS + EYE_COLUMNS + POSE_COLUMNS + LANDMARK_COLUMNS + AU_COLUMNS
VALUE_COLUMNS = CONTRACT_COLUMNS[len(META_COLUMNS) :]


class TrackingError(ValueError):
    """A tracking file the features cannot use; the message names the file and what to do."""


def landmarks_2d(i: int | slice = slice(None)) -> list[str]:
    idx = range(N_LANDMARKS)[i] if isinstance(i, slice) else [i]
    return [f"{a}_{j}" for j in idx for a in "xy"]


def read_openface_csv(path: Path | str, where: str | None = None) -> pd.DataFrame:
    """A tracking CSV of either real variant (or the contract itself) as a contract-column DataFrame.

    Column names are stripped (raw OpenFace writes ", "); extra columns are dropped; a missing contract column
    is an error listing it. Values are float64 except ``frame`` (int). Errors name ``where`` (default: the
    path), for a CSV read from a temporary copy.
    """
    path = Path(path)
    where = where or str(path)
    try:
        table = pd.read_csv(path, skipinitialspace=True, low_memory=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise TrackingError(f"{where}: not a readable tracking CSV ({e})") from None
    table.columns = [str(c).strip() for c in table.columns]
    if "success" not in table.columns:  # the Zenodo 3255102 release (see the module docstring)
        table = pd.concat([table, pd.DataFrame({"success": 1.0}, index=table.index)], axis=1)
    missing = [c for c in CONTRACT_COLUMNS if c not in table.columns]
    if missing:
        raise TrackingError(
            f"{where}: {len(missing)} OpenFace columns missing (e.g. {missing[:5]}); expected OpenFace 2.x "
            "FeatureExtraction output with -2Dfp -3Dfp -pose -aus -gaze; rerun the tracking with those flags "
            "(tracking.openface.flags), or re-download the tracking archive if the CSV came from one"
        )
    table = table[list(CONTRACT_COLUMNS)]
    try:
        values = table.apply(pd.to_numeric, errors="raise")
    except (ValueError, TypeError) as e:
        raise TrackingError(f"{where}: non-numeric tracking values ({e})") from None
    if values["frame"].isna().any() or (values["frame"] % 1 != 0).any():
        raise TrackingError(f"{where}: the frame column must hold frame numbers 1, 2, ...")
    values["frame"] = values["frame"].astype(int)
    if values["frame"].duplicated().any():
        dup = values.loc[values["frame"].duplicated(), "frame"].tolist()[:5]
        raise TrackingError(f"{where}: frames {dup} appear twice (more than one face tracked?)")
    return values.sort_values("frame", ignore_index=True)


def write_contract(path: Path, table: pd.DataFrame, sidecar: dict) -> None:
    """Write a contract CSV (columns in contract order) and its JSON sidecar ``<stem>.json``, each atomically."""
    missing = [c for c in CONTRACT_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"contract table lacks {missing[:5]}")
    table = table[list(CONTRACT_COLUMNS)]
    atomic_write_text(path, table.to_csv(index=False, float_format="%.6g", na_rep=""))
    atomic_write_text(path.with_suffix(".json"), json.dumps(sidecar, indent=2, sort_keys=True) + "\n")


@dataclass(frozen=True)
class LostRule:
    """The face-lost rule's thresholds (config ``tracking.lost``)."""

    min_confidence: float = 0.8
    max_run: int = 15  # frames (0.5 s) in the central window
    max_fraction: float = 0.25  # of the central window


def lost_frames(table: pd.DataFrame, n_frames: int, rule: LostRule, columns: tuple[str, ...]) -> np.ndarray:
    """Boolean (n_frames,) mask of lost frames (index 0 = frame 1) under the face-lost rule."""
    rows = table[(table["frame"] >= 1) & (table["frame"] <= n_frames)]
    tracked = np.zeros(n_frames, dtype=bool)
    values = rows[list(columns)].to_numpy(dtype=np.float64)
    xy = rows[landmarks_2d()].to_numpy(dtype=np.float64)
    ok = (
        (rows["success"].to_numpy() > 0)
        & (rows["confidence"].to_numpy() >= rule.min_confidence)
        & np.isfinite(values).all(axis=1)
        & ~(xy == 0).all(axis=1)
    )
    tracked[rows["frame"].to_numpy()[ok] - 1] = True
    return ~tracked


def longest_run(mask: np.ndarray) -> tuple[int, int]:
    """Length and start index of the longest run of True in ``mask`` ((0, -1) when there is none)."""
    best, start, run_start = 0, -1, 0
    for i, value in enumerate(np.append(mask, False)):
        if not value:
            if i - run_start > best:
                best, start = i - run_start, run_start
            run_start = i + 1
    return best, start


def fill_lost(values: np.ndarray, lost: np.ndarray) -> np.ndarray:
    """(n_frames, d) values with lost rows replaced by linear interpolation in time between tracked frames
    (the nearest tracked frame repeated beyond the first/last one)."""
    good = np.flatnonzero(~lost)
    if good.size == 0:
        raise ValueError("no tracked frame to interpolate from")
    out = values.copy()
    bad = np.flatnonzero(lost)
    for j in range(values.shape[1]):
        out[bad, j] = np.interp(bad, good, values[good, j])
    return out


def clip_track(
    table: pd.DataFrame,
    n_frames: int,
    rule: LostRule,
    columns: tuple[str, ...],
    where: str,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``columns`` of one clip, one row per video frame, lost frames filled by the face-lost rule.

    Returns ``(values (n_frames, len(columns)), lost (n_frames,))``. The run/fraction limits apply to the
    central 88 frames; ``where`` names the clip in errors.
    """
    lost = lost_frames(table, n_frames, rule, columns)
    try:
        first, last = frame_window(n_frames)
    except ValueError as e:
        raise TrackingError(f"{where}: {e}") from None
    in_window = lost[first:last]
    run, start = longest_run(in_window)
    if run > rule.max_run or in_window.mean() > rule.max_fraction:
        raise TrackingError(
            f"{where}: the face is lost in {int(in_window.sum())} of the {last - first} window frames "
            f"({first + 1}..{last}), longest run {run} frames from frame {first + start + 1}; limits: "
            f"run {rule.max_run}, fraction {rule.max_fraction} (config tracking.lost). Check the video, or "
            "raise the limits knowingly"
        )
    dense = np.full((n_frames, len(columns)), np.nan)
    rows = table[(table["frame"] >= 1) & (table["frame"] <= n_frames)]
    dense[rows["frame"].to_numpy() - 1] = rows[list(columns)].to_numpy(dtype=np.float64)
    return fill_lost(dense, lost), lost


# ------------------------------------------------------------------------------------------------ backends


def tracking_member_names(clip: str) -> tuple[str, str]:
    """Names a clip's tracking CSV may have in the Zenodo 3255102 zip: the audio-video (01-01-...) or the
    video-only (02-01-...) name of the same recording, flat or under a folder."""
    return f"{clip}.csv", f"02{clip[2:]}.csv"


def sidecar(clip: str, video: Path, video_frames: int, table: pd.DataFrame, info: dict) -> dict:
    """The JSON sidecar of a clip's contract CSV (see the module docstring)."""
    tracked = table["success"].to_numpy() > 0
    return {
        **info,
        "clip": clip,
        "video": str(video),
        "video_frames": int(video_frames),
        "rows": len(table),
        "tracked_frames": int(tracked.sum()),
        "untracked_frames": table.loc[~tracked, "frame"].astype(int).tolist(),
        "not_produced": [c for c in VALUE_COLUMNS if table[c].isna().all()],
    }


def openface_command(
    command: list[str], flags: list[str], video: Path, out_dir: Path, name: str
) -> list[str]:
    """The FeatureExtraction call for one video (config ``tracking.openface``)."""
    return [*command, "-f", str(video), "-out_dir", str(out_dir), "-of", name, *flags]


def run_openface(video: Path, work: Path, command: list[str], flags: list[str]) -> tuple[pd.DataFrame, dict]:
    """Track one video with the OpenFace FeatureExtraction binary; its CSV parsed into the contract."""
    if shutil.which(command[0]) is None:
        raise TrackingError(
            f"OpenFace executable {command[0]!r} not found (config tracking.openface.command). Install "
            "OpenFace 2.x (https://github.com/TadasBaltrusaitis/OpenFace/wiki) and give the path to "
            "FeatureExtraction, or a container command; or use tracking.backend: precomputed or mediapipe"
        )
    name = video.stem
    argv = openface_command(command, flags, video, work, name)
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    out = work / f"{name}.csv"
    if done.returncode != 0 or not out.is_file():
        raise TrackingError(
            f"{video}: OpenFace failed (exit {done.returncode}, {' '.join(argv)}): "
            f"{(done.stderr or done.stdout).strip()[-500:]}"
        )
    table = read_openface_csv(out, where=f"{video} (OpenFace output)")
    return table, {"backend": "openface", "command": argv, "flags": list(flags)}


def read_precomputed(archive: Path, clip: str, work: Path) -> tuple[pd.DataFrame, dict]:
    """A clip's tracking CSV from the RAVDESS facial-tracking zip (Zenodo 3255102), parsed into the contract."""
    with zipfile.ZipFile(archive) as zf:
        by_base: dict[str, list[str]] = {}
        for name in zf.namelist():
            by_base.setdefault(Path(name).name, []).append(name)
        found = [m for base in tracking_member_names(clip) for m in by_base.get(base, [])]
        if not found:
            raise TrackingError(
                f"{archive}: no tracking CSV for clip {clip} ({' or '.join(tracking_member_names(clip))})"
            )
        member = found[0]  # the audio-video name first; both names would be the same recording
        target = work / f"{clip}.csv"
        with zf.open(member) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
    table = read_openface_csv(target, where=f"{archive} (member {member})")
    return table, {"backend": "precomputed", "archive": archive.name, "member": member}


def track_actor(
    backend: str, table: pd.DataFrame, out: Path, params: dict, archive: Path | None = None
) -> int:
    """Track every clip of ``table`` (one actor) with ``backend`` into the folder ``out`` (contract CSVs and
    sidecars). The folder appears whole or not at all: it is built beside ``out`` and renamed at the end."""
    out = Path(out)
    with built_dir(out) as build:
        (build / ".work").mkdir()
        tracker = _tracker(backend, params, archive, build / ".work")
        for row in table.itertuples(index=False):
            video = Path(row.path)
            n_frames = probe_video_frames(video)
            contract, info = tracker(video)
            if not (contract["success"] > 0).any():
                raise TrackingError(f"{video}: no face found in any of its frames ({backend} backend)")
            write_contract(
                build / f"{row.clip}.csv", contract, sidecar(row.clip, video, n_frames, contract, info)
            )
        shutil.rmtree(build / ".work")
    return len(table)


def _tracker(backend: str, params: dict, archive: Path | None, work: Path):
    """A function video -> (contract table, sidecar info) for ``backend``."""
    if backend == "mediapipe":
        from avemotion import facemesh  # imports mediapipe: only where it is used

        cfg = facemesh.MediaPipeConfig(**params["settings"])
        model = Path(params["model"])
        facemesh.check_model(model)
        return lambda video: facemesh.track_video(video, model, cfg)
    if backend == "openface":
        return lambda video: run_openface(video, work, list(params["command"]), list(params["flags"]))
    if backend == "precomputed":
        if archive is None:
            raise ValueError("the precomputed backend needs the tracking archive")
        return lambda video: read_precomputed(archive, video.stem, work)
    raise ValueError(f"unknown tracking backend {backend!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("backend", choices=("mediapipe", "openface", "precomputed"))
    parser.add_argument("--clips", type=Path, required=True, help="clip table (clips.csv)")
    parser.add_argument("--actor", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True, help="folder to create (contract CSVs + sidecars)")
    parser.add_argument("--params", default="{}", help="JSON of config tracking.<backend>")
    parser.add_argument("--archive", type=Path, help="precomputed: the facial-tracking zip")
    parser.add_argument("--record", type=Path, help="precomputed: verify the zip against this record first")
    args = parser.parse_args(argv)
    try:
        table = actor_clips(args.clips, args.actor)
        if args.record is not None:
            verify_record(args.archive, read_record(args.record))
        n = track_actor(args.backend, table, args.out, json.loads(args.params), args.archive)
    except (TrackingError, ClipSetError, DownloadError, AudioError, FileNotFoundError, DiskFullError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"actor {args.actor}: {n} clips tracked ({args.backend}) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
