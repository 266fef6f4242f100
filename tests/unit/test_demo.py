"""Tests of avemotion.demo: the synthetic RAVDESS-layout dataset (names, archives, streams, ground truth)."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import re
import zipfile
from pathlib import Path

import av
import numpy as np
import pytest

from avemotion import demo, paper

NAME = re.compile(r"^(0[12])-01-0([1-8])-0([12])-0([12])-0([12])-(\d\d)$")


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def read_clips(out_dir: Path) -> list[dict]:
    with open(out_dir / demo.CLIPS_FILE, newline="") as f:
        return list(csv.DictReader(f))


def read_landmarks(out_dir: Path) -> dict[str, np.ndarray]:
    """Landmarks per clip as (n_frames, 68, 2), checking the row order frame-major, point-minor."""
    rows: dict[str, list] = {}
    with gzip.open(out_dir / demo.LANDMARKS_FILE, "rt", newline="") as f:
        reader = csv.reader(f)
        assert next(reader) == ["clip", "frame", "point", "x", "y"]
        for clip, frame, point, x, y in reader:
            rows.setdefault(clip, []).append((int(frame), int(point), float(x), float(y)))
    out = {}
    for clip, values in rows.items():
        table = np.array(values)
        n_frames = len(table) // 68
        assert len(table) == n_frames * 68
        np.testing.assert_array_equal(table[:, 0], np.repeat(np.arange(n_frames), 68))
        np.testing.assert_array_equal(table[:, 1], np.tile(np.arange(68), n_frames))
        out[clip] = table[:, 2:].reshape(n_frames, 68, 2)
    return out


def member(archive: Path, name: str) -> bytes:
    actor = int(name[-2:])
    with zipfile.ZipFile(archive) as z:
        return z.read(f"Actor_{actor:02d}/{name}.mp4")


def frame_rms(audio: np.ndarray) -> np.ndarray:
    """RMS of the mono mix per video frame (1600 samples)."""
    mono = audio.mean(axis=0)
    return np.sqrt((mono.reshape(-1, paper.SAMPLES_PER_FRAME) ** 2).mean(axis=1))


def f0_autocorrelation(x: np.ndarray, sr: int = paper.SAMPLE_RATE) -> float:
    """Median F0 of the loud 43 ms frames of `x` from the autocorrelation peak in 70-400 Hz (independent)."""
    n = 2048
    frames = np.lib.stride_tricks.sliding_window_view(x, n)[:: n // 2]
    energy = (frames**2).mean(axis=1)
    f0 = []
    for frame in frames[energy > 0.3 * energy.max()]:
        spectrum = np.fft.rfft((frame - frame.mean()) * np.hanning(n), 2 * n)
        ac = np.fft.irfft(np.abs(spectrum) ** 2)[:n]
        lo, hi = sr // 400, sr // 70
        f0.append(sr / (lo + np.argmax(ac[lo:hi])))
    return float(np.median(f0))


# One AV clip per run keeps generation at about a second.
TINY = {"actors": (2,), "emotions": (8,), "statements": (2,), "intensities": (2,)}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    demo.generate_demo(out, seed=0, actors=(2,), emotions=(4, 8), statements=(2,), intensities=(2,))
    return out


# --- names ---------------------------------------------------------------------------------------------


def test_default_selection_is_384_clips_covering_every_fold_and_class():
    names = [n for actor in paper.ACTORS for n in demo.clip_names(actor)]
    assert len(names) == 384 == len(set(names))
    fields = [NAME.match(n).groups() for n in names]
    assert {f[0] for f in fields} == {"01"}
    assert {int(f[1]) for f in fields} == set(paper.EMOTION_CODES)
    assert {int(f[5]) for f in fields} == set(paper.ACTORS)
    for test_actors in paper.FOLDS.values():
        emotions = {int(f[1]) for f in fields if int(f[5]) in test_actors}
        assert emotions == set(paper.EMOTION_CODES)


def test_full_selection_matches_ravdess_counts_and_neutral_has_no_strong_intensity():
    names = demo.clip_names(7, statements=(1, 2), repetitions=(1, 2), intensities=(1, 2))
    assert len(names) == paper.CLIPS_PER_ACTOR == 60
    assert all(NAME.match(n) for n in names)
    assert not [n for n in names if n.startswith("01-01-01-02")]
    assert "01-01-01-01-02-02-07" in names
    video_only = demo.clip_names(7, statements=(1,), modality=paper.MODALITY_VIDEO)
    assert video_only[0] == "02-01-01-01-01-01-07"
    assert demo.clip_names(3, intensities=(2,), statements=(1,)) == [
        f"01-01-0{e}-02-01-01-03" for e in range(2, 9)
    ]
    assert demo.archive_name(5) == "Video_Speech_Actor_05.zip"


@pytest.mark.parametrize(
    "kwargs",
    [{"actors": (25,)}, {"statements": (3,)}, {"intensities": (0,)}, {"repetitions": (1, 3)}, {"actors": ()}],
)
def test_bad_selection_is_refused_before_any_work(tmp_path, kwargs):
    with pytest.raises(ValueError, match=r"RAVDESS range|empty"):
        demo.generate_demo(tmp_path / "out", **kwargs)
    assert list(tmp_path.iterdir()) == []


# --- archives and streams ------------------------------------------------------------------------------


def test_archive_layout_pairs_every_av_clip_with_its_video_only_copy(tiny):
    archives = sorted(p.name for p in tiny.glob("*.zip"))
    assert archives == ["Video_Speech_Actor_02.zip"]
    with zipfile.ZipFile(tiny / archives[0]) as z:
        infos = z.infolist()
    expected = ["01-01-04-02-02-01-02", "01-01-08-02-02-01-02"]
    expected += ["02" + n[2:] for n in expected]
    assert [i.filename for i in infos] == [f"Actor_02/{n}.mp4" for n in sorted(expected)]
    assert {i.date_time for i in infos} == {demo.ZIP_DATE_TIME}
    assert [r["clip"] for r in read_clips(tiny)] == expected[:2]
    assert not [p for p in tiny.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_av_clip_is_h264_720p30_with_aac_stereo_of_matching_duration(tiny):
    row = read_clips(tiny)[1]
    n_frames = int(row["n_frames"])
    data = member(tiny / "Video_Speech_Actor_02.zip", row["clip"])
    with av.open(io.BytesIO(data)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert (video.codec_context.name, video.codec_context.pix_fmt) == ("h264", "yuv420p")
        assert (video.codec_context.width, video.codec_context.height) == paper.VIDEO_SIZE
        assert video.average_rate == paper.FPS
        assert (audio.codec_context.name, audio.codec_context.sample_rate) == ("aac", paper.SAMPLE_RATE)
        assert audio.codec_context.layout.name == "stereo"
        frames = [f.to_ndarray(format="gray") for f in container.decode(video=0)]
    with av.open(io.BytesIO(data)) as container:
        samples = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    assert len(frames) == n_frames
    assert frames[0].shape == (720, 1280) and frames[0].std() > 20  # a picture, not a blank
    assert samples.shape[0] == 2
    assert abs(samples.shape[1] / paper.SAMPLE_RATE - n_frames / paper.FPS) < 0.05
    assert float(row["duration_s"]) == pytest.approx(n_frames / paper.FPS, abs=1e-3)
    # The two channels differ slightly; both carry the speech.
    left, right = samples[:, paper.SAMPLE_RATE // 10 :]
    assert 0.9 < np.corrcoef(left, right)[0, 1] < 1.0
    assert 0.8 < np.std(left) / np.std(right) < 1.25


def test_video_only_copy_has_the_same_video_packets_and_no_audio(tiny):
    archive = tiny / "Video_Speech_Actor_02.zip"
    av_name = read_clips(tiny)[0]["clip"]
    packets = {}
    for name in (av_name, "02" + av_name[2:]):
        with av.open(io.BytesIO(member(archive, name))) as container:
            packets[name] = (
                [s.type for s in container.streams],
                [(bytes(p), p.pts, p.dts) for p in container.demux(video=0) if p.size],
            )
    (av_streams, av_packets), (vo_streams, vo_packets) = packets.values()
    assert av_streams == ["video", "audio"] and vo_streams == ["video"]
    assert len(av_packets) == int(read_clips(tiny)[0]["n_frames"])
    assert vo_packets == av_packets


def test_same_seed_same_bytes_other_seed_other_bytes_and_actors_independent(tmp_path):
    runs = {
        "a": dict(TINY, seed=0),
        "b": dict(TINY, seed=0),
        "c": dict(TINY, seed=1),
        "d": dict(TINY, seed=0, actors=(2, 3), workers=2),
    }
    for name, kwargs in runs.items():
        demo.generate_demo(tmp_path / name, **kwargs)
    files = ("Video_Speech_Actor_02.zip", demo.CLIPS_FILE, demo.LANDMARKS_FILE)
    assert [md5(tmp_path / "a" / f) for f in files] == [md5(tmp_path / "b" / f) for f in files]
    assert md5(tmp_path / "a" / files[0]) != md5(tmp_path / "c" / files[0])
    # Actor 2 alone and actor 2 next to actor 3 in a process pool: the same archive.
    assert md5(tmp_path / "a" / files[0]) == md5(tmp_path / "d" / files[0])
    assert len(read_clips(tmp_path / "d")) == 2


def test_interrupted_run_leaves_no_partial_archive(tmp_path, monkeypatch):
    encode = demo.encode_clip
    calls = []

    def failing(frames, audio):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("disk full")
        return encode(frames, audio)

    monkeypatch.setattr(demo, "encode_clip", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        demo.generate_demo(tmp_path, actors=(2,), emotions=(1, 3), statements=(1,))
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_and_reports(tmp_path, capsys):
    demo.main(["--out", str(tmp_path), "--actors", "5", "--emotions", "3", "--statements", "1"])
    printed = capsys.readouterr().out
    assert "Video_Speech_Actor_05.zip (2 mp4 files" in printed
    assert demo.LANDMARKS_FILE in printed and demo.CLIPS_FILE in printed
    with pytest.raises(SystemExit):
        demo.main(["--out", str(tmp_path), "--actors", "30"])


# --- ground truth --------------------------------------------------------------------------------------


def test_landmark_ground_truth_has_one_row_per_clip_frame_point_inside_the_central_crop(tiny):
    clips = read_clips(tiny)
    landmarks = read_landmarks(tiny)
    assert sorted(landmarks) == sorted(r["clip"] for r in clips)
    for row in clips:
        points = landmarks[row["clip"]]
        assert points.shape == (int(row["n_frames"]), 68, 2)
        x, y = points[..., 0], points[..., 1]
        crop = (paper.VIDEO_SIZE[0] - paper.VIDEO_SIZE[1]) / 2  # central 720x720
        assert crop < x.min() and x.max() < crop + paper.VIDEO_SIZE[1]
        assert y.min() > 0 and y.max() < paper.VIDEO_SIZE[1]
        # Anatomy: brows above eyes above nose tip above mouth above chin; left eye left of right eye.
        mean = points.mean(axis=0)
        order = [mean[19, 1], mean[37, 1], mean[30, 1], mean[51, 1], mean[57, 1], mean[8, 1]]
        assert order == sorted(order)
        assert mean[36, 0] < mean[39, 0] < mean[42, 0] < mean[45, 0]
        # The file's values are the generator's, rounded to 0.01 px.
        fields = ("actor", "emotion", "intensity", "statement", "repetition")
        params = demo.clip_params(0, demo.Clip(*(int(row[k]) for k in fields)))
        speech = demo.synthesize_speech(params)
        expected = demo.render_clip(params, speech.envelope).landmarks
        np.testing.assert_allclose(points, expected, atol=0.006)


def _marker_face(points: np.ndarray) -> demo.FaceTemplate:
    """An opaque black face box with a white Gaussian dot (sigma 1 photograph pixel) on each of `points`."""
    face = demo.astronaut_face()
    h, w = face.rgba.shape[:2]
    x0, y0 = demo.FACE_BOX[:2]
    yy, xx = np.mgrid[y0 : y0 + h, x0 : x0 + w]
    dots = sum(np.exp(-0.5 * ((xx - x) ** 2 + (yy - y) ** 2)) for x, y in points)
    rgba = np.zeros((h, w, 4), dtype=np.float32)
    rgba[2:-2, 2:-2, 3] = 255
    rgba[..., :3] = (255 * np.clip(dots, 0, 1))[..., None] * (rgba[..., 3:] / 255)
    return demo.FaceTemplate(rgba=rgba, landmarks=face.landmarks)


def _peak(image: np.ndarray, near: np.ndarray, radius: int = 3) -> np.ndarray:
    """Sub-pixel (x, y) of the brightest pixel within `radius` of `near`, by a Gaussian (log-parabola) fit.

    The peak, unlike the centroid, is where the dot's centre lands however the warp stretches the dot.
    """
    cx, cy = np.round(near).astype(int)
    window = image[cy - radius : cy + radius + 1, cx - radius : cx + radius + 1]
    iy, ix = np.unravel_index(np.argmax(window), window.shape)
    y, x = cy - radius + iy, cx - radius + ix
    log = np.log(image)
    offsets = []
    for before, at, after in (
        (log[y, x - 1], log[y, x], log[y, x + 1]),
        (log[y - 1, x], log[y, x], log[y + 1, x]),
    ):
        offsets.append(0.5 * (before - after) / (before - 2 * at + after))
    return np.array([x + offsets[0], y + offsets[1]])


def _spaced_groups(points: np.ndarray, spacing: float) -> list[list[int]]:
    groups: list[list[int]] = []
    for i, p in enumerate(points):
        for group in groups:
            if all(np.hypot(*(p - points[j])) >= spacing for j in group):
                group.append(i)
                break
        else:
            groups.append([i])
    return groups


def test_landmarks_move_exactly_like_the_pixels():
    """Render dots painted on the landmarks and find them where the ground truth says."""
    params = demo.clip_params(0, demo.Clip(6, 8, 2, 1, 1))  # surprised, strong: big warp and head motion
    speech = demo.synthesize_speech(params)
    motion = demo.clip_motion(params, speech.envelope)
    loud, quiet = int(np.argmax(speech.envelope)), 1
    # Mouth wide open; the same with a blink; a pause with pressed lips.
    aus = motion.aus[[loud, loud, quiet]].copy()
    aus[1, demo.AUS.index("blink")] = demo.BLINK
    assert aus[0, demo.AUS.index("jaw_open")] > 0.8 and aus[2, demo.AUS.index("lips_close")] > 0.9
    frames = demo.Motion(aus=aus, affine=motion.affine[[loud, loud, quiet]], head_deg=motion.head_deg[:3])
    landmarks = demo.ASTRONAUT_LANDMARKS
    truth = (demo.motion_landmarks(frames, landmarks) - 0.5) / demo.RENDER_FACTOR  # in render pixels
    errors = []
    for group in _spaced_groups(landmarks, spacing=8.0):  # dots far enough apart not to overlap
        face = _marker_face(landmarks[group])
        for k, frame in enumerate(demo.render_frames(params, frames, face)):
            brightness = frame.astype(float).mean(axis=-1) + 1
            for i in group:
                errors.append(np.hypot(*(_peak(brightness, truth[k, i]) - truth[k, i])))
    assert len(errors) == 3 * 68
    assert np.max(errors) < 0.5  # render pixels (= 1 output pixel); measured 0.35
    assert np.mean(errors) < 0.15  # measured 0.09


def test_landmarks_solve_the_pixel_sampling_rule_with_pressed_lips():
    """A frame pixel at u shows the photograph at u - D(u): the landmark L sits where that equals L."""
    params = demo.clip_params(0, demo.Clip(6, 4, 2, 1, 1))
    speech = demo.synthesize_speech(params)
    motion = demo.clip_motion(params, speech.envelope)
    assert motion.aus[:, demo.AUS.index("lips_close")].max() > 0.9
    canvas = (demo.motion_landmarks(motion) - 0.5) / demo.RENDER_FACTOR
    linear, offset = motion.affine[:, :, :2], motion.affine[:, :, 2]
    u = np.einsum("nij,npj->npi", np.linalg.inv(linear), canvas - offset[:, None, :])
    fields = demo.au_displacement(u[..., 0], u[..., 1])  # (n_au, 2, n_frames, 68)
    sampled = u - np.einsum("na,aknp->npk", motion.aus, fields)
    np.testing.assert_allclose(sampled, np.broadcast_to(demo.ASTRONAUT_LANDMARKS, sampled.shape), atol=1e-4)
    # Pressed lips: the inner lips come together, to less than half their gap with the lips relaxed.
    closed = motion.aus[:, demo.AUS.index("lips_close")] > 0.9
    relaxed = demo.Motion(aus=motion.aus.copy(), affine=motion.affine, head_deg=motion.head_deg)
    relaxed.aus[:, demo.AUS.index("lips_close")] = 0.0
    gaps = [
        np.linalg.norm(points[closed][:, [67, 66, 65]] - points[closed][:, [61, 62, 63]], axis=-1).mean()
        for points in (demo.motion_landmarks(motion), demo.motion_landmarks(relaxed))
    ]
    assert gaps[0] < 0.5 * gaps[1]  # measured 5 vs 12 output pixels


def test_mouth_opens_with_the_speech():
    params = demo.clip_params(0, demo.Clip(9, 5, 1, 2, 1))
    speech = demo.synthesize_speech(params)
    landmarks = demo.render_clip(params, speech.envelope).landmarks
    inner_gap = np.linalg.norm(landmarks[:, [67, 66, 65]] - landmarks[:, [61, 62, 63]], axis=-1).mean(axis=1)
    rms = frame_rms(speech.audio)  # from the audio itself, not from the envelope that drives the mouth
    assert np.corrcoef(inner_gap, rms)[0, 1] > 0.7
    silent = rms < 0.1 * rms.max()
    assert inner_gap[~silent].max() > inner_gap[silent].mean() + 8  # output pixels
    # The jaw and chin follow; the nose bridge does not open with the mouth.
    chin = landmarks[:, 8, 1] - landmarks[:, 27, 1]
    assert np.corrcoef(chin, rms)[0, 1] > 0.5


def test_expressions_never_fold_the_face():
    for clip in (demo.Clip(1, 8, 2, 1, 1), demo.Clip(4, 3, 2, 2, 1), demo.Clip(11, 4, 2, 1, 1)):
        params = demo.clip_params(0, clip)
        motion = demo.clip_motion(params, demo.synthesize_speech(params).envelope)
        assert min(demo.min_warp_determinant(a) for a in motion.aus[::3]) > 0.1


def test_clip_table_matches_the_parameters_and_the_audio(tiny):
    for row in read_clips(tiny):
        assert int(row["actor"]) == 2 and row["sex"] == "female"
        assert paper.EMOTION_CODES[int(row["emotion"])] == row["emotion_name"]
        assert int(row["n_samples"]) == int(row["n_frames"]) * paper.SAMPLES_PER_FRAME
        assert 0.2 < float(row["speech_onset_s"]) < float(row["speech_offset_s"]) < float(row["duration_s"])
        assert float(row["speech_rate_syl_s"]) == pytest.approx(
            int(row["n_syllables"]) / (float(row["speech_offset_s"]) - float(row["speech_onset_s"])), rel=1e-3
        )


# --- audio ---------------------------------------------------------------------------------------------


def test_durations_and_speech_placement():
    for actor in (1, 2, 13, 24):
        for clip in demo.clips_for_actor(actor, intensities=(1, 2)):
            params = demo.clip_params(0, clip)
            assert demo.MIN_DURATION_S <= params.duration_s <= demo.MAX_DURATION_S
            assert params.n_frames == max(paper.N_FRAMES, round(params.duration_s * paper.FPS))
            assert paper.N_FRAMES <= params.n_frames <= round(demo.MAX_DURATION_S * paper.FPS)
            onset, offset = params.speech_onset_s, params.speech_onset_s + sum(params.syllable_s)
            assert onset >= 0.2 and offset <= params.n_frames / paper.FPS - 0.2


def test_speech_signal_f0_by_sex_and_silence_around_speech():
    for actor, low, high in ((1, 80, 175), (2, 160, 330)):  # odd = male, even = female
        params = demo.clip_params(0, demo.Clip(actor, 1, 1, 1, 1))
        speech = demo.synthesize_speech(params)
        assert speech.audio.shape == (2, params.n_frames * paper.SAMPLES_PER_FRAME)
        assert speech.audio.dtype == np.float32 and np.abs(speech.audio).max() < 1
        f0 = f0_autocorrelation(speech.audio.mean(axis=0))
        assert low < f0 < high
        assert f0 == pytest.approx(speech.f0_mean_hz, rel=0.25)
        rms = frame_rms(speech.audio)
        onset = int(params.speech_onset_s * paper.FPS)
        assert rms[: onset - 1].max() < 0.05 * rms.max()  # low noise before the speech
        assert speech.envelope.shape == (params.n_frames,) and speech.envelope.max() == 1


def test_emotion_is_learnable_from_log_mel_across_actors():
    """Mean + std of a 24-band log-mel (the paper's LMS setting) of the central 88 frames, nearest class mean
    trained on actors 1-8, tested on actors 9-12: far above the 1/8 chance level."""
    torch = pytest.importorskip("torch")
    torchaudio = pytest.importorskip("torchaudio")
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=paper.SAMPLE_RATE, n_fft=4800, hop_length=1600, n_mels=24, f_max=17_000
    )

    def features(actors):
        x, y = [], []
        for actor in actors:
            for clip in demo.clips_for_actor(actor, statements=(1,)):
                audio = demo.synthesize_speech(demo.clip_params(0, clip)).audio.mean(axis=0)
                start = (len(audio) - paper.N_SAMPLES) // 2
                spec = torch.log(mel(torch.from_numpy(audio[start : start + paper.N_SAMPLES].copy())) + 1e-6)
                x.append(np.concatenate([spec.mean(dim=1).numpy(), spec.std(dim=1).numpy()]))
                y.append(clip.emotion)
        return np.array(x), np.array(y)

    x_train, y_train = features(range(1, 9))
    x_test, y_test = features(range(9, 13))
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-9
    centroids = np.stack([((x_train - mean) / std)[y_train == e].mean(axis=0) for e in range(1, 9)])
    distances = ((((x_test - mean) / std)[:, None] - centroids[None]) ** 2).sum(axis=-1)
    accuracy = np.mean(np.argmin(distances, axis=1) + 1 == y_test)
    assert accuracy > 0.4  # chance 0.125; about 0.6 with these actors
