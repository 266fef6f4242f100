"""Tracking-contract tables built from known geometry, for the tracking and face-feature tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from avemotion import tracking

HEADER = Path(__file__).resolve().parents[1] / "data" / "ravdess-facialtracking-openface-2.1.0-header.csv"


def contract_table(landmarks: np.ndarray, eye: np.ndarray | None = None, **columns) -> pd.DataFrame:
    """A contract table of T frames: 68 3D landmarks (T, 68, 3) (2D = X, Y), optional eye landmarks
    (T, 56, 3), confidence 0.98, success 1, every other value 0 unless given in ``columns`` (name -> (T,))."""
    n = len(landmarks)
    eye = np.zeros((n, 56, 3)) if eye is None else eye
    data = {c: np.zeros(n) for c in tracking.CONTRACT_COLUMNS}
    data["frame"] = np.arange(1, n + 1)
    data["timestamp"] = np.arange(n) / 30
    data["confidence"] = np.full(n, 0.98)
    data["success"] = np.ones(n)
    for i in range(68):
        for k, axis in enumerate("XYZ"):
            data[f"{axis}_{i}"] = landmarks[:, i, k]
        data[f"x_{i}"], data[f"y_{i}"] = landmarks[:, i, 0], landmarks[:, i, 1]
    for i in range(56):
        for k, axis in enumerate("XYZ"):
            data[f"eye_lmk_{axis}_{i}"] = eye[:, i, k]
        data[f"eye_lmk_x_{i}"], data[f"eye_lmk_y_{i}"] = eye[:, i, 0], eye[:, i, 1]
    data.update(columns)
    return pd.DataFrame(data)[list(tracking.CONTRACT_COLUMNS)]


def face(n_frames: int, scale: float = 1.0, seed: int = 0) -> np.ndarray:
    """(T, 68, 3) landmarks: one random face (mm, around z = 500) scaled by ``scale`` in every frame."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(-60, 60, (68, 3)) + np.array([0.0, 0.0, 500.0])
    return np.broadcast_to(base * scale, (n_frames, 68, 3)).copy()


def zenodo_csv(table: pd.DataFrame) -> str:
    """``table`` written like the RAVDESS release: its exact 712-column header (no face_id/success), ","."""
    header = HEADER.read_text().strip().split(",")
    out = pd.DataFrame({c: table[c] if c in table.columns else 0.0 for c in header})
    return out.to_csv(index=False)


def raw_openface_csv(table: pd.DataFrame) -> str:
    """``table`` written like OpenFace FeatureExtraction: frame, face_id, timestamp, confidence, success, ...
    (the release's columns plus face_id and success), separated by ", "."""
    header = HEADER.read_text().strip().split(",")
    header = ["frame", "face_id", "timestamp", "confidence", "success", *header[3:]]
    out = pd.DataFrame({c: table[c] if c in table.columns else 0.0 for c in header})
    lines = [", ".join(header)]
    lines += [", ".join(f"{v:g}" for v in row) for row in out.to_numpy(dtype=float)]
    return "\n".join(lines) + "\n"
