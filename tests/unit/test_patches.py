"""Tests for avemotion.patches: boxes and frame sets checked by hand, crop content on frames whose pixels
encode their coordinates, the mp4 storage round trip (lossless exact, crf 18 bounded, bytes repeatable), and
the per-actor stage end to end on a synthetic 1280x720 video: layout, sidecar, lost-frame interpolation, and
the failures (face lost too long, tracking missing) leaving nothing behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
import torch
from contract_data import contract_table
from skimage import data as skdata

from avemotion import paper, patches, tracking
from avemotion.patches import PatchError
from avemotion.tracking import TrackingError

N_FRAMES = 90  # the test video: central window 1..88, fine-tuning frames i * 89 / 19
LOST = {"min_confidence": 0.8, "max_run": 15, "max_fraction": 0.25}
EYE_LEFT, EYE_RIGHT, MOUTH = (560.0, 300.0), (720.0, 302.0), (640.5, 480.5)  # group centres at frame 0


# ------------------------------------------------------------------------------------------------ boxes


def one_frame(groups: dict[range, list[tuple[float, float]]]) -> np.ndarray:
    """(1, 68, 2) landmarks: every point at (640, 360) except the given groups' points (cycled)."""
    lmk = np.full((1, 68, 2), [640.0, 360.0])
    for points, xy in groups.items():
        for j, i in enumerate(points):
            lmk[0, i] = xy[j % len(xy)]
    return lmk


def test_stream_boxes_by_hand() -> None:
    lmk = one_frame(
        {
            range(36, 42): [(600, 300), (640, 310), (620, 305)],  # centre (620, 305)
            range(42, 48): [(700, 290), (751, 311)],  # centre (725.5, 300.5)
            range(48, 68): [(590, 450), (671, 481), (630, 470)],  # centre (630.5, 465.5)
        }
    )
    boxes = patches.stream_boxes(lmk)
    assert list(boxes) == list(patches.STREAMS)
    assert boxes["face"].tolist() == [[280, 0, 1000, 720]]  # the 720x720 centre crop
    # x0 = floor(620 - 64 + 0.5) = 556, y0 = floor(305 - 64 + 0.5) = 241
    assert boxes["eye_left"].tolist() == [[556, 241, 684, 369]]
    # 725.5 - 64 = 661.5 and 300.5 - 64 = 236.5 round half up to 662, 237
    assert boxes["eye_right"].tolist() == [[662, 237, 790, 365]]
    # mouth 110 high x 180 wide: 630.5 - 90 = 540.5 -> 541; 465.5 - 55 = 410.5 -> 411
    assert boxes["mouth"].tolist() == [[541, 411, 721, 521]]
    assert all(b.dtype == np.int64 for b in boxes.values())


def test_boxes_shift_inside_the_frame_at_its_edges() -> None:
    lmk = one_frame(
        {
            range(36, 42): [(2, 3), (20, 30)],  # centre (11, 16.5): x0 = -53, y0 = -47 -> shifted to 0, 0
            range(42, 48): [(1250, 700), (1275, 719)],  # centre (1262.5, 709.5) -> x0 1199, y0 646
            range(48, 68): [(1200, 5), (1279, 15)],  # centre (1239.5, 10): x0 1150, y0 -45
        }
    )
    boxes = patches.stream_boxes(lmk)
    assert boxes["eye_left"].tolist() == [[0, 0, 128, 128]]
    assert boxes["eye_right"].tolist() == [[1152, 592, 1280, 720]]  # shifted left and up, size kept
    assert boxes["mouth"].tolist() == [[1100, 0, 1280, 110]]
    for stream, (h, w) in patches.CROPS.items():
        x0, y0, x1, y1 = boxes[stream][0]
        assert (x1 - x0, y1 - y0) == (w, h)


def test_boxes_read_only_their_landmarks() -> None:
    lmk = one_frame({range(36, 68): [(640, 360)]})
    lmk[:, :36] = np.nan  # the jaw, brows and nose are never read
    assert patches.stream_boxes(lmk)["mouth"].tolist() == [[550, 305, 730, 415]]
    lmk[0, 50, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        patches.stream_boxes(lmk)
    with pytest.raises(ValueError, match=r"\(frames, 68, 2\)"):
        patches.stream_boxes(lmk[:, :48])
    with pytest.raises(ValueError, match="does not fit"):
        patches.stream_boxes(one_frame({}), frame_size=(640, 360))


# ------------------------------------------------------------------------------------------ frame sets


def test_finetune_indices_by_hand() -> None:
    # i * 99 / 19 for n = 100: 5.21 -> 5, 10.42 -> 10, 15.63 -> 16, ..., 93.79 -> 94, 99
    assert patches.finetune_indices(100).tolist() == [
        0, 5, 10, 16, 21, 26, 31, 36, 42, 47, 52, 57, 63, 68, 73, 78, 83, 89, 94, 99,
    ]  # fmt: skip
    assert patches.finetune_indices(20).tolist() == list(range(20))
    # i * 87 / 19 for n = 88: 4.58 -> 5, 9.16 -> 9, 13.74 -> 14, ...
    assert patches.finetune_indices(88).tolist() == [
        0, 5, 9, 14, 18, 23, 27, 32, 37, 41, 46, 50, 55, 60, 64, 69, 73, 78, 82, 87,
    ]  # fmt: skip
    # An exact half rounds up: n = 22, k = 5 -> 0, 5.25, 10.5, 15.75, 21
    assert patches.finetune_indices(22, k=5).tolist() == [0, 5, 11, 16, 21]
    with pytest.raises(ValueError, match="19 video frames, fewer than the 20"):
        patches.finetune_indices(19)


@pytest.mark.parametrize("n", [20, 21, 57, 89, 90, 118, 159, 160, 301])
def test_finetune_indices_are_rounded_linspace(n: int) -> None:
    got = patches.finetune_indices(n)
    assert got.tolist() == np.floor(np.linspace(0, n - 1, 20) + 0.5).astype(int).tolist()
    assert got[0] == 0 and got[-1] == n - 1 and (np.diff(got) > 0).all()


def test_central_indices_by_hand() -> None:
    assert patches.central_indices(100).tolist() == list(range(6, 94))
    assert patches.central_indices(88).tolist() == list(range(88))
    assert patches.central_indices(89).tolist() == list(range(88))  # the odd frame dropped at the end
    assert patches.central_indices(N_FRAMES).tolist() == list(range(1, 89))
    with pytest.raises(ValueError, match="87 video frames"):
        patches.central_indices(87)


# ------------------------------------------------------------------------------------- crop and resize


def coordinate_frame() -> np.ndarray:
    """A 720x1280 frame whose pixel (y, x) holds (x % 256, y % 256, x // 256 + 10 * (y // 256))."""
    y, x = np.mgrid[0:720, 0:1280]
    return np.stack([x % 256, y % 256, x // 256 + 10 * (y // 256)], axis=-1).astype(np.uint8)


def test_crop_takes_the_box_pixels() -> None:
    frame = coordinate_frame()
    got = patches.crop(frame, np.array([1100, 250, 1280, 360]))
    assert got.shape == (110, 180, 3)
    x, y = np.arange(1100, 1280), np.arange(250, 360)
    np.testing.assert_array_equal(got[0, :, 0], x % 256)
    np.testing.assert_array_equal(got[:, 0, 1], y % 256)
    np.testing.assert_array_equal(got[:, :, 2], (x // 256)[None, :] + 10 * (y // 256)[:, None])
    with pytest.raises(ValueError, match="not inside"):
        patches.crop(frame, np.array([1200, 0, 1328, 128]))


def test_resize_patch_matches_torch_interpolate() -> None:
    rng = np.random.default_rng(0)
    patch = rng.integers(0, 256, (110, 180, 3), dtype=np.uint8)
    got = patches.resize_patch(patch, 64)
    assert got.shape == (64, 64, 3) and got.dtype == np.uint8
    x = torch.from_numpy(patch).permute(2, 0, 1)[None].double()
    ref = torch.nn.functional.interpolate(x, (64, 64), mode="bilinear", antialias=True, align_corners=False)
    ref = ref[0].permute(1, 2, 0).round().clamp(0, 255).numpy()
    assert np.abs(got - ref).max() <= 1
    assert (patches.resize_patch(np.full((720, 720, 3), 77, np.uint8), 224) == 77).all()
    np.testing.assert_array_equal(patches.resize_patch(patch[:64, :64], 64), patch[:64, :64])


def test_resize_patch_is_torchvisions_resize_byte_for_byte() -> None:
    """The patches of earlier runs (torchvision's resize) and ours are the same bytes, down and up."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    rng = np.random.default_rng(1)
    for shape, size in (((110, 180, 3), 64), ((300, 300, 3), 24), ((400, 260, 3), 224), ((50, 70, 3), 224)):
        patch = rng.integers(0, 256, shape, dtype=np.uint8)
        image = torch.from_numpy(patch).permute(2, 0, 1)
        ref = TF.resize(image, [size, size], interpolation=InterpolationMode.BILINEAR, antialias=True)
        np.testing.assert_array_equal(patches.resize_patch(patch, size), ref.permute(1, 2, 0).numpy())


def test_the_patch_module_does_not_import_torchvision() -> None:
    code = "import sys, avemotion.patches; print('torchvision' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------------------------- storage


def astronaut_patches(n: int = 12, size: int = 96, crop: int = 55) -> np.ndarray:
    """Real-photograph texture like the eye patches': (n, size, size, 3), a ``crop`` x ``crop`` window of the
    astronaut's face (moving 1 px right and down per frame) enlarged x1.75 (as 128 -> 224)."""
    image = skdata.astronaut()
    windows = [image[80 + t : 80 + t + crop, 190 + t : 190 + t + crop] for t in range(n)]
    return np.stack([patches.resize_patch(w, size) for w in windows])


def test_lossless_round_trip_is_exact(tmp_path: Path) -> None:
    noise = np.random.default_rng(1).integers(0, 256, (5, 48, 48, 3), dtype=np.uint8)
    for name, array in (("noise", noise), ("photo", astronaut_patches())):
        path = tmp_path / f"{name}.mp4"
        patches.encode_patches(path, array, crf=0)
        np.testing.assert_array_equal(patches.decode_patches(path), array)
    assert patches.codec_of(0) == ("libx264rgb", "rgb24")


def test_crf18_round_trip_is_close_and_repeatable(tmp_path: Path) -> None:
    array = astronaut_patches()
    sizes = [patches.encode_patches(tmp_path / f"{i}.mp4", array, crf=18) for i in range(3)]
    got = patches.decode_patches(tmp_path / "0.mp4")
    assert got.shape == array.shape and got.dtype == np.uint8
    error = np.abs(got.astype(int) - array)
    # Measured: mean 1.80 levels, 99th percentile 7 (the 8-bit RGB -> YUV -> RGB round trip alone: mean 0.4,
    # at most 2). Same measure on 224 patches: 1.40 for this texture, 0.6-1.1 on the demo video's patches.
    assert error.mean() < 2.2
    assert np.percentile(error, 99) <= 9
    assert sizes[0] < array.nbytes / 10
    # Same patches, same bytes (96 is a size where x264's macroblock-tree rate control would vary them).
    assert len({(tmp_path / f"{i}.mp4").read_bytes() for i in range(3)}) == 1
    assert patches.codec_of(18) == ("libx264", "yuv444p")


# ------------------------------------------------------------------------------------- the actor stage


def frame_pixels(f: int, box: tuple[int, int, int, int] = (0, 0, 1280, 720)) -> np.ndarray:
    """The ``box`` (x0, y0, x1, y1) of frame f of the test video: red = x // 5, green = y // 3, blue =
    40 + 2 f (which frame it is)."""
    x0, y0, x1, y1 = box
    y, x = np.mgrid[y0:y1, x0:x1]
    return np.stack([x // 5, y // 3, np.full_like(x, 40 + 2 * f)], axis=-1).astype(np.uint8)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """A 90-frame 1280x720 30 fps mp4 of frame_pixels, RGB lossless: it decodes to exactly those pixels."""
    path = tmp_path_factory.mktemp("video") / "01-01-03-01-01-01-01.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264rgb", rate=30, options={"crf": "0", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "rgb24"
        pixels = frame_pixels(0)
        for f in range(N_FRAMES):
            pixels[..., 2] = 40 + 2 * f
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = f
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def landmarks(n: int = N_FRAMES) -> np.ndarray:
    """(n, 68, 2) landmarks: jaw/brows/nose spread around the face, each eye's and the mouth's points around
    their centres (EYE_LEFT, ...), the whole face moving right 1 px per frame."""
    rng = np.random.default_rng(3)
    lmk = np.empty((68, 2))
    lmk[:36] = rng.uniform([500, 200], [780, 560], (36, 2))
    for points, centre, (dx, dy) in (
        (range(36, 42), EYE_LEFT, (30, 8)),
        (range(42, 48), EYE_RIGHT, (30, 8)),
        (range(48, 68), MOUTH, (60, 25)),
    ):
        offsets = rng.uniform(-1, 1, (len(points), 2)) * [dx, dy]
        offsets -= (offsets.min(0) + offsets.max(0)) / 2  # the bounding box centred on `centre`
        lmk[list(points)] = np.asarray(centre) + offsets
    moving = np.broadcast_to(lmk, (n, 68, 2)).copy()
    moving[..., 0] += np.arange(n)[:, None]
    return moving


def write_tracking(folder: Path, clip: str, lmk: np.ndarray, n_frames: int = N_FRAMES, **columns) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    table = contract_table(np.concatenate([lmk, np.zeros((*lmk.shape[:2], 1))], axis=2), **columns)
    path = folder / f"{clip}.csv"
    tracking.write_contract(path, table, {"backend": "test", "video_frames": n_frames, "clip": clip})
    return path


def clips_table(video: Path, clips: list[str]) -> pd.DataFrame:
    """clips.csv rows (clip, path, actor) for ``clips``, each a copy (hard link) of the test video."""
    rows = []
    for clip in clips:
        path = video.parent / f"{clip}.mp4"
        if not path.exists():
            path.hardlink_to(video)
        rows.append({"clip": clip, "path": str(path), "actor": 1})
    return pd.DataFrame(rows)


def expected_patches(boxes: np.ndarray, frames: list[int], size: int) -> np.ndarray:
    """The patches cut from the known pixels of the test video's frames (independent of the decoder)."""
    return np.stack([patches.resize_patch(frame_pixels(f, tuple(boxes[f])), size) for f in frames])


PARAMS = {"size": 48, "crf": 0, "preset": "ultrafast", "lost": LOST}


def test_crop_actor_layout_sidecar_and_exact_patches(tmp_path: Path, video: Path) -> None:
    clip = video.stem
    lmk = landmarks()
    write_tracking(tmp_path / "tracking", clip, lmk)
    out = tmp_path / "patches" / "Actor_01"
    assert patches.crop_actor(clips_table(video, [clip]), tmp_path / "tracking", out, PARAMS) == 1
    assert sorted(p.name for p in out.iterdir()) == [clip, f"{clip}.json"]
    assert sorted(p.name for p in (out / clip).iterdir()) == sorted(
        f"{s}_{f}.mp4" for s in patches.STREAMS for f in patches.FRAME_SETS
    )
    assert [p.name for p in out.parent.iterdir()] == ["Actor_01"]  # no build folder left
    meta = json.loads((out / f"{clip}.json").read_text())
    assert meta["frames"]["central"] == list(range(1, 89))
    assert meta["frames"]["finetune"] == np.floor(np.linspace(0, 89, 20) + 0.5).astype(int).tolist()
    assert (meta["size"], meta["crf"], meta["codec"], meta["lost_frames"]) == (48, 0, "libx264rgb", [])
    assert meta["tracking"]["backend"] == "test" and meta["video_frames"] == N_FRAMES
    boxes = patches.stream_boxes(lmk)
    # Frame 10: eye_left centre (570, 300) -> x0 = floor(570 - 64 + 0.5) = 506, y0 = 236.
    assert boxes["eye_left"][10].tolist() == [506, 236, 634, 364]
    for stream in patches.STREAMS:
        for name, frames in meta["frames"].items():
            assert meta["boxes"][stream][name] == boxes[stream][frames].tolist()
            got = patches.read_patches(out, clip, stream, name)
            assert got.shape == (len(frames), 48, 48, 3) and got.dtype == np.uint8
            np.testing.assert_array_equal(got, expected_patches(boxes[stream], frames, 48))
            np.testing.assert_array_equal(got[:, 0, 0, 2], 40 + 2 * np.array(frames))  # the right frames


def test_crf18_patches_stay_close_to_the_lossless_ones(tmp_path: Path, video: Path) -> None:
    clip = video.stem
    write_tracking(tmp_path / "tracking", clip, landmarks())
    out = tmp_path / "Actor_01"
    patches.crop_actor(clips_table(video, [clip]), tmp_path / "tracking", out, {**PARAMS, "crf": 18})
    boxes = patches.stream_boxes(landmarks())
    frames = json.loads((out / f"{clip}.json").read_text())["frames"]["finetune"]
    got = patches.read_patches(out, clip, "mouth", "finetune").astype(int)
    assert np.abs(got - expected_patches(boxes["mouth"], frames, 48)).mean() < 1.0


def test_lost_frames_take_interpolated_landmarks(tmp_path: Path, video: Path) -> None:
    clip = video.stem
    truth = landmarks()
    seen = truth.copy()
    confidence = np.full(N_FRAMES, 0.98)
    lost = [0, 1, *range(40, 46)]  # two at the clip's start (held), a run of 6 inside (interpolated)
    confidence[lost] = 0.1
    seen[lost] += 200.0  # what the tracker wrote for them: wrong, never used
    write_tracking(tmp_path / "tracking", clip, seen, confidence=confidence)
    out = tmp_path / "Actor_01"
    patches.crop_actor(clips_table(video, [clip]), tmp_path / "tracking", out, PARAMS)
    meta = json.loads((out / f"{clip}.json").read_text())
    assert meta["lost_frames"] == lost
    central = meta["frames"]["central"]
    want = patches.stream_boxes(truth)  # the face moves linearly: interpolation recovers it exactly
    want_start = patches.stream_boxes(np.broadcast_to(truth[2], truth.shape))  # held from frame 2
    for stream in ("eye_left", "mouth"):
        got = np.array(meta["boxes"][stream]["central"])
        np.testing.assert_array_equal(got[central.index(40) : central.index(46)], want[stream][40:46])
        assert meta["boxes"][stream]["finetune"][0] == want_start[stream][0].tolist()


def test_face_lost_too_long_is_an_error_and_leaves_nothing(tmp_path: Path, video: Path) -> None:
    good, bad = video.stem, "01-01-03-01-02-01-01"
    write_tracking(tmp_path / "tracking", good, landmarks())
    success = np.ones(N_FRAMES)
    success[30:50] = 0  # a 20-frame run in the central window (limit 15)
    write_tracking(tmp_path / "tracking", bad, landmarks(), success=success)
    out = tmp_path / "patches" / "Actor_01"
    with pytest.raises(TrackingError, match=rf"{bad}.*lost in 20 of the 88 window frames.*longest run 20"):
        patches.crop_actor(clips_table(video, [good, bad]), tmp_path / "tracking", out, PARAMS)
    assert list(out.parent.iterdir()) == []  # neither the folder nor its build folder


def test_missing_tracking_or_mismatched_video_is_a_clear_error(tmp_path: Path, video: Path) -> None:
    clip = video.stem
    out = tmp_path / "patches" / "Actor_01"
    table = clips_table(video, [clip])
    with pytest.raises(PatchError, match=rf"tracking/{clip}.csv: tracking CSV missing.*extract_openface"):
        patches.crop_actor(table, tmp_path / "tracking", out, PARAMS)
    write_tracking(tmp_path / "tracking", clip, landmarks(), n_frames=95)
    with pytest.raises(PatchError, match=rf"{clip}.json: tracked 95 video frames but .* has 90"):
        patches.crop_actor(table, tmp_path / "tracking", out, PARAMS)
    assert list(out.parent.iterdir()) == []


def test_read_patches_checks_the_sidecar(tmp_path: Path, video: Path) -> None:
    clip = video.stem
    write_tracking(tmp_path / "tracking", clip, landmarks())
    out = tmp_path / "Actor_01"
    patches.crop_actor(clips_table(video, [clip]), tmp_path / "tracking", out, PARAMS)
    sidecar = out / f"{clip}.json"
    meta = json.loads(sidecar.read_text())
    meta["frames"]["finetune"].append(90)
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(PatchError, match=r"eye_left_finetune.mp4: decodes to \(20, 48, 48, 3\), its sidecar"):
        patches.read_patches(out, clip, "eye_left", "finetune")
    (out / clip / "mouth_central.mp4").unlink()
    with pytest.raises(PatchError, match=r"mouth_central\.mp4: patch video missing"):
        patches.read_patches(out, clip, "mouth", "central")
    with pytest.raises(ValueError, match="unknown stream 'nose'"):
        patches.read_patches(out, clip, "nose", "central")


def test_cli_and_footprint(tmp_path: Path, video: Path, capsys) -> None:
    clip = video.stem
    write_tracking(tmp_path / "tracking", clip, landmarks())
    clips_table(video, [clip]).to_csv(tmp_path / "clips.csv", index=False)
    out = tmp_path / "Actor_01"
    argv = ["--clips", str(tmp_path / "clips.csv"), "--actor", "1", "--tracking", str(tmp_path / "tracking")]
    argv += ["--out", str(out), "--params", json.dumps({**PARAMS, "crf": 18})]
    assert patches.main(argv) == 0
    use = patches.footprint(out)
    files = {p.name: p.stat().st_size for p in (out / clip).iterdir()}
    assert use["clips"] == 1
    assert use["bytes"]["mouth"]["central"] == files["mouth_central.mp4"]
    assert use["total"] == sum(files.values()) + (out / f"{clip}.json").stat().st_size
    assert f"actor 1: 1 clips -> {out}, {use['total']} bytes written" in capsys.readouterr().out
    assert patches.main([*argv[:-1], json.dumps({**PARAMS, "crf": 60})]) == 1
    assert "error: patches.crf: 60 is not an integer in 0..51" in capsys.readouterr().err
    assert patches.main([*argv[:3], "2", *argv[4:]]) == 1
    assert "lists no clip of actor 2" in capsys.readouterr().err


def test_config_is_checked() -> None:
    cfg = patches.PatchConfig.from_params({"lost": LOST})
    assert (cfg.size, cfg.crf, cfg.preset) == (paper.PATCH_SIZE, 18, "medium")
    with pytest.raises(ValueError, match="unknown keys"):
        patches.PatchConfig.from_params({"lost": LOST, "crop": 3})
    with pytest.raises(ValueError, match=r"patches\.preset"):
        patches.PatchConfig.from_params({"lost": LOST, "preset": "fastest"})
    with pytest.raises(ValueError, match=r"patches\.size"):
        patches.PatchConfig.from_params({"lost": LOST, "size": 8})
