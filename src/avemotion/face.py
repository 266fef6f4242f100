"""The engineered face features, computed per frame from the tracking contract (see ``avemotion.tracking``).

- **Face KPD** (780): Euclidean 3D distances between every pair of 40 of the 68 landmarks (40 choose 2 = 780).
  The paper does not list its 40; we keep the points that move with expression and drop the rigid or poorly
  tracked ones: the chin (8), both brows (17-26), the nose root, tip and base (27, 30, 31, 33, 35), both eyes
  (36-47) and the outer lips (48-59). Dropped: the jaw contour except the chin (its 16 points sit on the
  face's silhouette, where trackers are least accurate), the nose bridge's middle (28, 29) and the nostril
  wings between base and sides (32, 34), the inner lips (60-67: they coincide with the outer lips when the
  mouth is closed, and jaw opening is carried by 8, 57 and 51).
- **Eyes KPD** (179): within each eye, the 3D distances between every pair of its 12 eyelid landmarks
  (``eye_lmk`` 8-19 and 36-47: 2 x 66), the distances between every pair of 10 eye/brow points (45): each
  brow's outer end, middle and inner end (17, 19, 21, 22, 24, 26) and the four eye corners (36, 39, 42, 45),
  then the gaze angles ``gaze_angle_x/y`` (already both eyes' average).
- **Face AU** (35): the 17 intensities rescaled from 0-5 to 0-1, then the 18 presences (0/1).
- **Head pose** (6): pitch, yaw, roll (``pose_Rx/Ry/Rz``, radians), then the 3D location (``pose_Tx/Ty/Tz``, mm).

KPD normalisation (paper): every distance is divided by the same distance in the *most neutral frame* (the
lowest summed AU intensity among its tracked frames) of the same actor's repetition-1 neutral clip of the same
statement (``01-01-01-01-SS-01-AA``), so a feature is 1 where the face is as in that frame. The reference clip
belongs to the actor's own fold, so for a test actor it uses the test fold's labels (which clip is neutral);
``normalize: none`` turns it off (config ``features.<kpd feature>.normalize``; docs/REPRODUCTION.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from avemotion.tracking import AU_COLUMNS, AU_INTENSITY, AU_PRESENCE

FACE_KPD_POINTS: tuple[int, ...] = (8, *range(17, 27), 27, 30, 31, 33, 35, *range(36, 48), *range(48, 60))
EYELID_POINTS: tuple[tuple[int, ...], ...] = (tuple(range(8, 20)), tuple(range(36, 48)))  # per eye, eye_lmk
EYE_BROW_POINTS: tuple[int, ...] = (17, 19, 21, 22, 24, 26, 36, 39, 42, 45)
AU_MAX_INTENSITY = 5.0
NORMALIZE = ("neutral", "none")


def xyz_columns(prefix: str, points: tuple[int, ...]) -> tuple[str, ...]:
    """Contract columns of the 3D coordinates of ``points``, point-major: X_p, Y_p, Z_p for each p."""
    return tuple(f"{prefix}{a}_{p}" for p in points for a in "XYZ")


def pairwise_distances(points: np.ndarray) -> np.ndarray:
    """(..., P, 3) points -> (..., P (P - 1) / 2) distances of the pairs i < j in row-major order."""
    i, j = np.triu_indices(points.shape[-2], k=1)
    return np.linalg.norm(points[..., i, :] - points[..., j, :], axis=-1)


@dataclass(frozen=True)
class KeyPointDistances:
    """Pairwise 3D distances within point groups (contract column prefix, points), each optionally divided by
    its value in a reference frame, then ``extra`` contract columns appended unchanged."""

    groups: tuple[tuple[str, tuple[int, ...]], ...]
    extra: tuple[str, ...] = ()
    normalizable: ClassVar[bool] = True

    @property
    def columns(self) -> tuple[str, ...]:
        """Contract columns read, in the order ``compute`` expects them."""
        return tuple(c for prefix, points in self.groups for c in xyz_columns(prefix, points)) + self.extra

    @property
    def dims(self) -> int:
        return sum(len(p) * (len(p) - 1) // 2 for _, p in self.groups) + len(self.extra)

    def distances(self, values: np.ndarray) -> np.ndarray:
        """(T, len(columns)) -> (T, number of distances)."""
        out, start = [], 0
        for _, points in self.groups:
            coords = values[:, start : start + 3 * len(points)].reshape(len(values), len(points), 3)
            out.append(pairwise_distances(coords))
            start += 3 * len(points)
        return np.concatenate(out, axis=1)

    def compute(self, values: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
        """(T, len(columns)) per-frame contract values -> (T, dims); ``reference`` is one frame's values."""
        d = self.distances(values)
        if reference is not None:
            ref = self.distances(reference[None, :])[0]
            if (ref <= 0).any():
                raise ValueError(f"{int((ref <= 0).sum())} reference distances are 0 (coincident landmarks)")
            d = d / ref
        return np.concatenate([d, values[:, values.shape[1] - len(self.extra) :]], axis=1)


@dataclass(frozen=True)
class Columns:
    """Contract columns taken as they are, each divided by its ``scale``."""

    columns: tuple[str, ...]
    scale: tuple[float, ...] | None = None
    normalizable: ClassVar[bool] = False

    @property
    def dims(self) -> int:
        return len(self.columns)

    def compute(self, values: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
        return values if self.scale is None else values / np.asarray(self.scale)


FaceFeature = KeyPointDistances | Columns
FACE_FEATURES: dict[str, FaceFeature] = {
    "face_kpd": KeyPointDistances((("", FACE_KPD_POINTS),)),
    "eyes_kpd": KeyPointDistances(
        (("eye_lmk_", EYELID_POINTS[0]), ("eye_lmk_", EYELID_POINTS[1]), ("", EYE_BROW_POINTS)),
        extra=("gaze_angle_x", "gaze_angle_y"),
    ),
    "face_au": Columns(AU_COLUMNS, (AU_MAX_INTENSITY,) * len(AU_INTENSITY) + (1.0,) * len(AU_PRESENCE)),
    "head_pose": Columns(("pose_Rx", "pose_Ry", "pose_Rz", "pose_Tx", "pose_Ty", "pose_Tz")),
}


def neutral_frame(au_intensity: np.ndarray, lost: np.ndarray) -> int:
    """Index of the most neutral tracked frame: the lowest summed AU intensity (first one on ties)."""
    total = np.where(lost, np.inf, np.nansum(au_intensity, axis=1))
    if not np.isfinite(total).any():
        raise ValueError("no tracked frame to take as the neutral reference")
    return int(np.argmin(total))


def reference_clip(actor: int, statement: int) -> str:
    """The neutral-reference clip of an actor and statement: audio-video speech, neutral, normal intensity,
    repetition 1."""
    return f"01-01-01-01-{statement:02d}-01-{actor:02d}"
