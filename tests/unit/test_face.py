"""Tests for avemotion.face and the tracking-feature extractors of avemotion.features: distances of known
geometry, the neutral-frame normalisation, the AU and head-pose vectors, and the whole extractor on contract
files written to disk."""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from contract_data import contract_table, face

from avemotion import face as facefeat
from avemotion import features, registry, tracking
from avemotion.face import FACE_FEATURES, neutral_frame, pairwise_distances, reference_clip

LOST = {"min_confidence": 0.8, "max_run": 15, "max_fraction": 0.25}


def test_pairwise_distances_of_known_points() -> None:
    points = np.array([[0.0, 0.0, 0.0], [3.0, 4.0, 0.0], [3.0, 4.0, 12.0]])
    assert pairwise_distances(points).tolist() == [5.0, 13.0, 12.0]  # (0,1), (0,2), (1,2)
    batch = np.stack([points, 2 * points])
    np.testing.assert_allclose(pairwise_distances(batch), [[5, 13, 12], [10, 26, 24]])


def test_feature_dimensions_match_the_registry_and_the_paper() -> None:
    assert len(facefeat.FACE_KPD_POINTS) == len(set(facefeat.FACE_KPD_POINTS)) == 40
    assert len(facefeat.EYE_BROW_POINTS) == 10
    for key, spec in FACE_FEATURES.items():
        assert spec.dims == registry.get(key).dims, key
        assert registry.get(key).source == "tracking"
    assert (FACE_FEATURES["face_kpd"].dims, FACE_FEATURES["eyes_kpd"].dims) == (780, 66 + 66 + 45 + 2)


def test_face_kpd_against_a_direct_computation() -> None:
    lmk = face(3, seed=1)
    lmk[1] *= 1.5  # the whole face 1.5x as large in frame 2
    spec = FACE_FEATURES["face_kpd"]
    table = contract_table(lmk)
    values = table[list(spec.columns)].to_numpy()
    raw = spec.compute(values)
    pairs = list(combinations(facefeat.FACE_KPD_POINTS, 2))
    expected = np.array([[np.linalg.norm(f[a] - f[b]) for a, b in pairs] for f in lmk])
    np.testing.assert_allclose(raw, expected)
    # Normalised by frame 1: frames 1 and 3 are all ones, frame 2 all 1.5.
    normed = spec.compute(values, reference=values[0])
    np.testing.assert_allclose(normed, [[1.0] * 780, [1.5] * 780, [1.0] * 780])
    with pytest.raises(ValueError, match="reference distances are 0"):
        spec.compute(values, reference=np.zeros_like(values[0]))


def test_eyes_kpd_layout_and_gaze_left_unnormalised() -> None:
    n = 2
    eye = np.zeros((n, 56, 3))
    eye[:, 8:20, 0] = np.arange(12)  # image-left eyelid on a line, 1 mm apart
    eye[:, 36:48, 1] = 2.0 * np.arange(12)  # image-right eyelid, 2 mm apart
    lmk = face(n)
    gaze_x, gaze_y = np.array([0.1, -0.2]), np.array([0.05, 0.3])
    table = contract_table(lmk, eye=eye, gaze_angle_x=gaze_x, gaze_angle_y=gaze_y)
    spec = FACE_FEATURES["eyes_kpd"]
    values = table[list(spec.columns)].to_numpy()
    out = spec.compute(values)
    line = [abs(i - j) for i, j in combinations(range(12), 2)]
    np.testing.assert_allclose(out[:, :66], [line, line])
    np.testing.assert_allclose(out[:, 66:132], [np.multiply(line, 2)] * 2)
    brow = [np.linalg.norm(lmk[0, a] - lmk[0, b]) for a, b in combinations(facefeat.EYE_BROW_POINTS, 2)]
    np.testing.assert_allclose(out[0, 132:177], brow)
    np.testing.assert_allclose(out[:, 177:], np.stack([gaze_x, gaze_y], 1))
    ref = values[0].copy()
    ref[:-2] *= 2.0  # a reference face twice as large: distances halve, gaze untouched
    normed = spec.compute(values, reference=ref)
    np.testing.assert_allclose(normed[:, :177], 0.5)
    np.testing.assert_allclose(normed[:, 177:], np.stack([gaze_x, gaze_y], 1))


def test_action_units_rescaled_and_head_pose_order() -> None:
    au = {
        "AU01_r": np.array([5.0]),
        "AU45_r": np.array([2.5]),
        "AU28_c": np.array([1.0]),
        "AU12_c": np.array([1.0]),
    }
    pose = {
        "pose_Tx": [10.0],
        "pose_Ty": [-20.0],
        "pose_Tz": [600.0],
        "pose_Rx": [0.1],
        "pose_Ry": [-0.2],
        "pose_Rz": [0.3],
    }
    table = contract_table(face(1), **au, **{k: np.array(v) for k, v in pose.items()})
    spec = FACE_FEATURES["face_au"]
    out = spec.compute(table[list(spec.columns)].to_numpy())[0]
    expected = np.zeros(35)
    expected[0] = 1.0  # AU01 intensity 5 / 5
    expected[16] = 0.5  # AU45 intensity 2.5 / 5
    expected[17 + 8] = 1.0  # AU12 presence (9th presence)
    expected[17 + 16] = 1.0  # AU28 presence (17th presence, before AU45)
    np.testing.assert_allclose(out, expected)
    spec = FACE_FEATURES["head_pose"]
    np.testing.assert_allclose(
        spec.compute(table[list(spec.columns)].to_numpy())[0], [0.1, -0.2, 0.3, 10, -20, 600]
    )


def test_neutral_frame_skips_lost_frames() -> None:
    au = np.array([[1.0, 1.0], [0.0, 0.5], [0.25, 0.125], [0.375, 0.0]])
    assert (
        neutral_frame(au, np.array([False, False, False, False])) == 2
    )  # sums 2, 0.5, 0.375, 0.375: the first minimum
    assert neutral_frame(au, np.array([False, False, True, False])) == 3
    with pytest.raises(ValueError, match="no tracked frame"):
        neutral_frame(au, np.ones(4, dtype=bool))
    assert reference_clip(7, 2) == "01-01-01-01-02-01-07"


def _write_actor(folder: Path, clips: dict[str, pd.DataFrame], video_frames: int) -> None:
    folder.mkdir(parents=True)
    for clip, table in clips.items():
        info = tracking.sidecar(clip, Path(f"{clip}.mp4"), video_frames, table, {"backend": "test"})
        tracking.write_contract(folder / f"{clip}.csv", table, info)


def test_extractor_normalises_by_the_most_neutral_frame_of_the_reference_clip(tmp_path: Path) -> None:
    n = 100  # window: frames 7..94
    ref_name, clip_name = "01-01-01-01-01-01-05", "01-01-05-01-01-01-05"
    ref_lmk = face(n, scale=1.0, seed=3)
    ref_lmk[40] *= 0.8  # frame 41: the most neutral one (lowest AU sum), a face 0.8x as large
    au = np.full(n, 2.0)
    au[40] = 0.5
    ref = contract_table(ref_lmk, AU04_r=au)
    clip_lmk = face(n, scale=1.2, seed=3)
    conf = np.full(n, 0.95)
    conf[50:53] = 0.1  # 3 lost frames in the window: interpolated (the face is constant)
    clip = contract_table(clip_lmk, confidence=conf)
    _write_actor(tmp_path / "Actor_05", {ref_name: ref, clip_name: clip}, n)
    table = pd.DataFrame({"clip": [clip_name, ref_name], "actor": [5, 5], "statement": [1, 1]})
    out, per_clip = features.EXTRACTORS["face_kpd"](
        table, [tmp_path / "Actor_05"], {"normalize": "neutral", "lost": LOST}
    )
    assert per_clip["lost_frames"].tolist() == [3, 0]
    assert out.shape == (2, 88, 780) and out.dtype == np.float32
    # The contract CSV keeps 6 significant digits (0.001 mm at 500 mm): ratios agree to about 1e-4.
    np.testing.assert_allclose(out[0], 1.2 / 0.8, rtol=2e-4)
    expected = np.full((88, 1), 1.0 / 0.8)
    expected[40 - 6] = 1.0  # the reference frame itself (frame 41; the window starts at frame 7)
    np.testing.assert_allclose(out[1], np.broadcast_to(expected, (88, 780)), rtol=2e-4)
    raw, _ = features.EXTRACTORS["face_kpd"](
        table, [tmp_path / "Actor_05"], {"normalize": "none", "lost": LOST}
    )
    pairs = list(combinations(facefeat.FACE_KPD_POINTS, 2))
    direct = [np.linalg.norm(clip_lmk[0, a] - clip_lmk[0, b]) for a, b in pairs]
    np.testing.assert_allclose(raw[0, 0], direct, atol=2e-3)  # mm; the CSV holds 0.001 mm at 500 mm
    au_out, _ = features.EXTRACTORS["face_au"](table, [tmp_path / "Actor_05"], {"lost": LOST})
    assert au_out.shape == (2, 88, 35)
    np.testing.assert_allclose(au_out[1, :, 2], au[6:94] / 5)  # AU04 is the 3rd intensity, window 6..93
    with pytest.raises(ValueError, match="normalize: 'median'"):
        features.EXTRACTORS["face_kpd"](table, [tmp_path / "Actor_05"], {"normalize": "median", "lost": LOST})


def test_extractor_errors_name_the_clip(tmp_path: Path) -> None:
    n = 100
    clip_name = "01-01-05-01-01-01-05"
    conf = np.full(n, 0.95)
    conf[30:60] = 0.0  # a 30-frame loss
    _write_actor(tmp_path / "Actor_05", {clip_name: contract_table(face(n), confidence=conf)}, n)
    table = pd.DataFrame({"clip": [clip_name], "actor": [5], "statement": [1]})
    with pytest.raises(tracking.TrackingError, match=rf"Actor_05/{clip_name}.csv: the face is lost in 30"):
        features.EXTRACTORS["head_pose"](table, [tmp_path / "Actor_05"], {"lost": LOST})
    # The reference clip is needed and absent.
    with pytest.raises(tracking.TrackingError, match="no tracking CSV for clip 01-01-01-01-01-01-05"):
        features.EXTRACTORS["eyes_kpd"](
            table,
            [tmp_path / "Actor_05"],
            {"normalize": "neutral", "lost": LOST | {"max_run": 40, "max_fraction": 0.5}},
        )
    (tmp_path / "Actor_05" / f"{clip_name}.json").write_text("{}")
    with pytest.raises(tracking.TrackingError, match="unreadable tracking sidecar"):
        features.EXTRACTORS["head_pose"](table, [tmp_path / "Actor_05"], {"lost": LOST})


def test_cli_writes_features_and_index(tmp_path: Path) -> None:
    n = 96
    names = ["01-01-01-01-01-01-05", "01-01-03-01-01-01-05"]
    _write_actor(tmp_path / "Actor_05", {c: contract_table(face(n, seed=i)) for i, c in enumerate(names)}, n)
    clips = tmp_path / "clips.csv"
    pd.DataFrame({"clip": names, "actor": [5, 5], "statement": [1, 1]}).to_csv(clips, index=False)
    out = tmp_path / "features" / "head_pose" / "features.npy"
    argv = ["head_pose", "--clips", str(clips), "--inputs", str(tmp_path / "Actor_05"), "--params",
            json.dumps({"lost": LOST}), "--out", str(out), "--index", str(out.with_name("index.csv"))]  # fmt: skip
    assert features.main(argv) == 0
    assert np.load(out).shape == (2, 88, 6)
    index = pd.read_csv(out.with_name("index.csv"))
    assert index["clip"].tolist() == names and index["lost_frames"].tolist() == [0, 0]
