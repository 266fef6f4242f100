"""Tests for avemotion.tracking: both real OpenFace CSV variants, the face-lost rule with hand-checked frames,
the contract writer, and the precomputed and openface backends (the latter through a stand-in executable)."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from contract_data import HEADER, contract_table, face, raw_openface_csv, zenodo_csv

from avemotion import tracking
from avemotion.tracking import LostRule, TrackingError, clip_track, fill_lost, longest_run, lost_frames


def test_contract_is_the_release_header_plus_success() -> None:
    header = HEADER.read_text().strip().split(",")
    assert len(header) == 712
    # The contract keeps the release's order and drops only the PDM parameters p_*.
    kept = [c for c in header if c in tracking.CONTRACT_COLUMNS]
    assert kept == [c for c in tracking.CONTRACT_COLUMNS if c != "success"]
    assert sorted(set(header) - set(kept)) == sorted(
        ["p_scale", "p_rx", "p_ry", "p_rz", "p_tx", "p_ty", *(f"p_{i}" for i in range(34))]
    )
    assert len(tracking.CONTRACT_COLUMNS) == 4 + 8 + 5 * 56 + 6 + 5 * 68 + 17 + 18


@pytest.mark.parametrize("variant", ["zenodo", "raw"])
def test_read_both_real_variants(tmp_path: Path, variant: str) -> None:
    lmk = face(3)
    table = contract_table(lmk, AU12_r=np.array([0.0, 1.5, 3.25]), pose_Ry=np.array([0.1, -0.2, 0.3]))
    text = zenodo_csv(table) if variant == "zenodo" else raw_openface_csv(table)
    path = tmp_path / "clip.csv"
    path.write_text(text)
    if variant == "raw":
        assert text.splitlines()[0].startswith("frame, face_id, timestamp, confidence, success, gaze_0_x")
    got = tracking.read_openface_csv(path)
    assert list(got.columns) == list(tracking.CONTRACT_COLUMNS)
    assert got["frame"].tolist() == [1, 2, 3]
    assert got["success"].tolist() == [1.0, 1.0, 1.0]
    assert got["AU12_r"].tolist() == [0.0, 1.5, 3.25]
    assert got["pose_Ry"].tolist() == pytest.approx([0.1, -0.2, 0.3])
    np.testing.assert_allclose(got["Z_33"], lmk[:, 33, 2], rtol=1e-5)
    np.testing.assert_allclose(got["x_0"], lmk[:, 0, 0], rtol=1e-5)


def test_read_raw_keeps_success_zero_rows(tmp_path: Path) -> None:
    table = contract_table(face(2), success=np.array([1.0, 0.0]), confidence=np.array([0.9, 0.02]))
    path = tmp_path / "clip.csv"
    path.write_text(raw_openface_csv(table))
    got = tracking.read_openface_csv(path)
    assert got["success"].tolist() == [1.0, 0.0]
    assert got["confidence"].tolist() == [0.9, 0.02]


def test_read_rejects_missing_columns_duplicates_and_text(tmp_path: Path) -> None:
    table = contract_table(face(2))
    path = tmp_path / "clip.csv"
    path.write_text(table.drop(columns=["AU45_c", "Z_67"]).to_csv(index=False))
    with pytest.raises(TrackingError, match=r"clip.csv: 2 OpenFace columns missing .*Z_67.*AU45_c"):
        tracking.read_openface_csv(path)
    table.loc[1, "frame"] = 1
    path.write_text(table.to_csv(index=False))
    with pytest.raises(TrackingError, match=r"frames \[1\] appear twice"):
        tracking.read_openface_csv(path)
    table = contract_table(face(2)).astype(object)
    table.loc[0, "X_3"] = "abc"
    path.write_text(table.to_csv(index=False))
    with pytest.raises(TrackingError, match="non-numeric"):
        tracking.read_openface_csv(path)
    path.write_text("")
    with pytest.raises(TrackingError, match="not a readable tracking CSV"):
        tracking.read_openface_csv(path)


def test_longest_run() -> None:
    assert longest_run(np.array([], dtype=bool)) == (0, -1)
    assert longest_run(np.array([0, 0, 0], dtype=bool)) == (0, -1)
    assert longest_run(np.array([1, 0, 1, 1, 1, 0, 1, 1], dtype=bool)) == (3, 2)
    assert longest_run(np.array([0, 1, 1], dtype=bool)) == (2, 1)


def test_lost_frames_every_cause() -> None:
    n = 8
    conf = np.array([0.9, 0.9, 0.5, 0.9, 0.9, 0.9, 0.9, 0.9])  # frame 3: low confidence
    success = np.array([1, 0, 1, 1, 1, 1, 1, 1.0])  # frame 2: success 0
    table = contract_table(face(n), confidence=conf, success=success)
    table.loc[3, "X_10"] = np.nan  # frame 4: a used value not finite
    table.loc[4, [f"{a}_{i}" for i in range(68) for a in "xy"]] = 0.0  # frame 5: untracked (all 2D zero)
    table = table.drop(index=6)  # frame 7: no row
    columns = ("X_10", "Y_10", "Z_10")
    lost = lost_frames(table, n, LostRule(min_confidence=0.8), columns)
    assert np.flatnonzero(lost).tolist() == [1, 2, 3, 4, 6]
    # A NaN in a column the feature does not read does not lose the frame.
    assert not lost_frames(table, n, LostRule(min_confidence=0.8), ("X_11",))[3]
    # Rows past the video's frame count are ignored.
    assert lost_frames(table, 4, LostRule(min_confidence=0.8), columns).tolist() == [False, True, True, True]


def test_fill_lost_interpolates_and_holds_edges() -> None:
    values = np.array([[np.nan], [2.0], [np.nan], [np.nan], [8.0], [np.nan]])
    lost = np.isnan(values[:, 0])
    filled = fill_lost(values, lost)
    assert filled[:, 0].tolist() == [2.0, 2.0, 4.0, 6.0, 8.0, 8.0]
    with pytest.raises(ValueError, match="no tracked frame"):
        fill_lost(values, np.ones(6, dtype=bool))


def test_clip_track_window_limits() -> None:
    n = 100  # window = frames 7..94 (0-based 6..93)
    lmk = face(n)
    lmk[:, 0, 0] = np.arange(n)  # X_0 = frame index, so interpolation is exact
    conf = np.full(n, 0.95)
    conf[20:30] = 0.1  # a 10-frame run inside the window
    table = contract_table(lmk, confidence=conf)
    rule = LostRule(min_confidence=0.8, max_run=10, max_fraction=0.25)
    values, lost = clip_track(table, n, rule, ("X_0",), where="clip A")
    assert lost.sum() == 10
    np.testing.assert_allclose(values[:, 0], np.arange(n))
    with pytest.raises(
        TrackingError,
        match=r"clip A: the face is lost in 10 of the 88 window frames \(7\.\.94\), "
        r"longest run 10 frames from frame 21; limits: run 9",
    ):
        clip_track(table, n, LostRule(min_confidence=0.8, max_run=9), ("X_0",), where="clip A")
    # Lost frames outside the window do not count against it.
    conf = np.full(n, 0.95)
    conf[:6] = 0.0
    conf[94:] = 0.0
    _, lost = clip_track(contract_table(lmk, confidence=conf), n, LostRule(max_run=0), ("X_0",), where="B")
    assert lost.sum() == 12
    with pytest.raises(TrackingError, match=r"fraction 0\.05"):
        conf = np.full(n, 0.95)
        conf[10:80:10] = 0.0  # 7 single lost frames = 8 % of the window
        clip_track(contract_table(lmk, confidence=conf), n, LostRule(max_fraction=0.05), ("X_0",), where="C")
    with pytest.raises(TrackingError, match="C: 80 video frames, fewer than the 88"):
        clip_track(contract_table(lmk[:80]), 80, LostRule(), ("X_0",), where="C")


def test_write_contract_round_trip(tmp_path: Path) -> None:
    table = contract_table(face(4))
    table.loc[:, "eye_lmk_x_20"] = np.nan  # a column the backend cannot produce
    info = tracking.sidecar("01-01-01-01-01-01-01", Path("v.mp4"), 5, table, {"backend": "test"})
    assert info["not_produced"] == ["eye_lmk_x_20"]
    assert (info["video_frames"], info["rows"], info["tracked_frames"]) == (5, 4, 4)
    path = tmp_path / "01-01-01-01-01-01-01.csv"
    tracking.write_contract(path, table, info)
    got = tracking.read_openface_csv(path)
    pd.testing.assert_frame_equal(got, table, check_dtype=False, rtol=1e-5)
    assert json.loads(path.with_suffix(".json").read_text())["backend"] == "test"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name, path.with_suffix(".json").name]


# ----------------------------------------------------------------------------------------- backends


def _clip_table(tmp_path: Path, names: list[str]) -> pd.DataFrame:
    """A clip table whose videos are tiny real mp4s (100 frames) made with PyAV."""
    import av

    rows = []
    for name in names:
        path = tmp_path / "videos" / f"{name}.mp4"
        path.parent.mkdir(exist_ok=True)
        with av.open(str(path), "w") as out:
            stream = out.add_stream("libx264", rate=30)
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
            for i in range(100):
                frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i, np.uint8), format="rgb24")
                out.mux(stream.encode(frame))
            out.mux(stream.encode())
        rows.append({"clip": name, "path": str(path), "actor": int(name[-2:]), "statement": 1})
    return pd.DataFrame(rows)


def test_precomputed_backend_reads_either_name_and_refuses_a_missing_clip(tmp_path: Path) -> None:
    names = ["01-01-01-01-01-01-03", "01-01-05-01-01-01-03"]
    table = _clip_table(tmp_path, names)
    archive = tmp_path / "FacialTracking_Actors_01-24.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(f"{names[0]}.csv", zenodo_csv(contract_table(face(100))))
        zf.writestr(f"Actor_03/02{names[1][2:]}.csv", zenodo_csv(contract_table(face(99, scale=2.0))))
    out = tmp_path / "tracking" / "Actor_03"
    assert tracking.track_actor("precomputed", table, out, {}, archive) == 2
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.{e}" for n in names for e in ("csv", "json"))
    info = json.loads((out / f"{names[1]}.json").read_text())
    assert info["member"] == f"Actor_03/02{names[1][2:]}.csv"
    assert (info["video_frames"], info["rows"], info["backend"]) == (100, 99, "precomputed")
    got = tracking.read_openface_csv(out / f"{names[1]}.csv")
    assert got["X_5"].iloc[0] == pytest.approx(face(1, scale=2.0)[0, 5, 0], rel=1e-5)
    # A clip absent from the zip: a clear error, and no partial folder.
    shutil_out = tmp_path / "tracking" / "Actor_04"
    table4 = _clip_table(tmp_path, ["01-01-01-01-01-01-04"])
    with pytest.raises(TrackingError, match=r"no tracking CSV for clip 01-01-01-01-01-01-04"):
        tracking.track_actor("precomputed", table4, shutil_out, {}, archive)
    assert sorted(p.name for p in (tmp_path / "tracking").iterdir()) == ["Actor_03"]


STAND_IN = Path(__file__).resolve().parents[1] / "data" / "FeatureExtraction"


def test_openface_backend_with_stand_in_executable(tmp_path: Path) -> None:
    exe = STAND_IN
    table = _clip_table(tmp_path, ["01-01-01-01-01-01-07"])
    out = tmp_path / "tracking" / "Actor_07"
    flags = ["-2Dfp", "-3Dfp", "-pose", "-aus", "-gaze"]
    tracking.track_actor("openface", table, out, {"command": [str(exe)], "flags": flags})
    info = json.loads((out / "01-01-01-01-01-01-07.json").read_text())
    assert info["backend"] == "openface"
    assert info["flags"] == flags
    assert info["command"][0] == str(exe) and info["command"][-5:] == flags
    assert (info["video_frames"], info["rows"], info["tracked_frames"], info["not_produced"]) == (
        100,
        100,
        100,
        [],
    )
    got = tracking.read_openface_csv(out / "01-01-01-01-01-01-07.csv")
    np.testing.assert_allclose(got["Z_40"], face(100)[:, 40, 2], rtol=1e-5)


def test_openface_backend_missing_or_failing_binary(tmp_path: Path) -> None:
    table = _clip_table(tmp_path, ["01-01-01-01-01-01-07"])
    out = tmp_path / "tracking" / "Actor_07"
    with pytest.raises(
        TrackingError,
        match=r"OpenFace executable 'no-such-FeatureExtraction' not found.*"
        r"tracking\.openface\.command",
    ):
        tracking.track_actor("openface", table, out, {"command": ["no-such-FeatureExtraction"], "flags": []})
    failing = tmp_path / "fail.sh"
    failing.write_text("#!/bin/sh\necho 'cannot open video' >&2\nexit 3\n")
    failing.chmod(0o755)
    with pytest.raises(TrackingError, match=r"OpenFace failed \(exit 3.*cannot open video"):
        tracking.track_actor("openface", table, out, {"command": [str(failing)], "flags": []})
    assert not (tmp_path / "tracking").exists() or os.listdir(tmp_path / "tracking") == []


def test_cli_precomputed_verifies_the_record(tmp_path: Path, capsys) -> None:
    from avemotion import download

    names = ["01-01-01-01-01-01-03"]
    table = _clip_table(tmp_path, names)
    clips = tmp_path / "clips.csv"
    table.to_csv(clips, index=False)
    archive = tmp_path / "FacialTracking_Actors_01-24.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(f"{names[0]}.csv", zenodo_csv(contract_table(face(100))))
    record = tmp_path / "FacialTracking_Actors_01-24.json"
    download.write_record(record, download.ArchiveRecord(archive.name, archive.stat().st_size, "0" * 32, "x"))
    argv = ["precomputed", "--clips", str(clips), "--actor", "3", "--out", str(tmp_path / "t" / "Actor_03"),
            "--archive", str(archive), "--record", str(record)]  # fmt: skip
    assert tracking.main(argv) == 1
    assert "expected md5 00000000" in capsys.readouterr().err
    assert not (tmp_path / "t" / "Actor_03").exists()
    download.write_record(record, download.ArchiveRecord(archive.name, archive.stat().st_size,
                                                         download.md5sum(archive), "x"))  # fmt: skip
    assert tracking.main(argv) == 0
    assert (tmp_path / "t" / "Actor_03" / f"{names[0]}.csv").is_file()
