"""Tests for avemotion.audio: the central 88-frame window, decoding real files, and every refusal.

The clips are real files written in tmp_path with PyAV: H.264 video (64x48) and an audio track holding known
signals (a gated tone with its onset at a chosen sample, left and right at different amplitudes). AAC is lossy
and smears a transient over a few samples, so AAC timing is checked to +-16 samples and amplitudes to a few
per cent; tracks stored as lossless float PCM (in a QuickTime container) are checked sample-exactly.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from avemotion import audio, clips, paper
from avemotion.audio import AudioError, central_audio, decode_audio, frame_window, sample_window

RATE = 48_000
TOL = 16  # samples: AAC's transient smear around an onset
# sample format handed to the encoder per codec: AAC takes planar float, PCM takes packed (interleaved)
SAMPLE_FORMATS = {"aac": "fltp", "pcm_f32le": "flt", "pcm_s16le": "s16"}


def build_clip(
    path: Path,
    n_frames: int,
    signal: np.ndarray | None,
    *,
    fps: int = 30,
    rate: int = RATE,
    codec: str = "aac",
    audio_start: int = 0,
    container_format: str | None = None,
    faststart: bool = False,
) -> Path:
    """Write a clip: ``n_frames`` of 64x48 H.264 at ``fps`` and, unless ``signal`` is None, a stereo track
    holding ``signal`` (2, n) from sample ``audio_start`` (its first frame's pts) on."""
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", format=container_format, options=options) as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        if signal is not None:
            sound = container.add_stream(codec, rate=rate)
            sound.layout = "stereo"
            sample_format = SAMPLE_FORMATS[codec]
            if codec != "aac":
                sound.format = sample_format
        for i in range(n_frames):
            image = np.full((48, 64, 3), (37 * i) % 256, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if signal is None:
            return path
        for s in range(0, signal.shape[1], 1024):
            chunk = signal[:, s : s + 1024]
            if sample_format != "fltp":
                chunk = chunk.T.reshape(1, -1)  # interleave L R L R ...
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(chunk), format=sample_format, layout="stereo"
            )
            frame.sample_rate = rate
            frame.pts = audio_start + s
            frame.time_base = Fraction(1, rate)
            for packet in sound.encode(frame):
                container.mux(packet)
        for packet in sound.encode():
            container.mux(packet)
    return path


def gated_tone(n: int, onset: int, end: int, freq: float = 6000.0, rate: int = RATE) -> np.ndarray:
    """A cosine of amplitude 1 on samples [onset, end), zero elsewhere: full amplitude at the onset sample,
    and at 6 kHz a period of 8 samples, so |x| > 0.5 A marks the onset and end to within 8 samples."""
    i = np.arange(n)
    tone = np.cos(2 * np.pi * freq * (i - onset) / rate)
    return np.where((i >= onset) & (i < end), tone, 0.0).astype(np.float32)


def stereo(mono: np.ndarray, left: float, right: float) -> np.ndarray:
    return np.stack([left * mono, right * mono]).astype(np.float32)


def above(x: np.ndarray, level: float) -> np.ndarray:
    return np.flatnonzero(np.abs(x) > level)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def noise(n: int, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal((2, n))).astype(np.float32)


# ------------------------------------------------------------------------------------------------ windows


@pytest.mark.parametrize(
    ("n", "frames", "samples"),
    [
        (100, (6, 94), (9_600, 150_400)),  # 12 spare frames: 6 each side
        (88, (0, 88), (0, 140_800)),
        (89, (0, 88), (0, 140_800)),  # one spare frame: dropped at the end
        (90, (1, 89), (1_600, 142_400)),
        (103, (7, 95), (11_200, 152_000)),  # 15 spare: 7 before, 8 after
        (131, (21, 109), (33_600, 174_400)),
    ],
)
def test_frame_and_sample_windows_by_hand(n, frames, samples):
    assert frame_window(n) == frames
    assert sample_window(n) == samples
    assert samples[1] - samples[0] == paper.N_SAMPLES == 140_800


def test_window_of_another_length():
    assert frame_window(10, frames=4) == (3, 7)
    assert sample_window(10, frames=4) == (4_800, 11_200)


@pytest.mark.parametrize("n", [87, 0])
def test_window_needs_88_frames(n):
    with pytest.raises(ValueError, match=f"{n} video frames, fewer than the 88 the window needs"):
        frame_window(n)
    with pytest.raises(ValueError, match="fewer than the 88"):
        sample_window(n)


# ------------------------------------------------------------------------------------------------ probing


@pytest.mark.parametrize("n", [88, 100, 131])
def test_probe_video_frames_counts_the_frames(tmp_path, n):
    path = build_clip(tmp_path / "c.mp4", n, noise(n * 1600))
    assert audio.probe_video_frames(path) == n


# ----------------------------------------------------------------------------------------------- decoding


def test_decode_audio_places_the_onset_and_keeps_channels_apart(tmp_path):
    n, onset, end = 100 * 1600, 50_003, 50_003 + 16_000
    path = build_clip(tmp_path / "c.mp4", 100, stereo(gated_tone(n, onset, end), 0.6, 0.2))
    samples, rate = decode_audio(path)
    assert rate == 48_000
    assert samples.dtype == np.float32
    assert samples.shape[0] == 2
    assert n <= samples.shape[1] <= n + 1024  # the last AAC frame may be padded out to 1024 samples
    left, right = samples
    assert abs(above(left, 0.3)[0] - onset) <= TOL
    assert abs(above(right, 0.1)[0] - onset) <= TOL
    assert abs(above(left, 0.3)[-1] - (end - 1)) <= TOL
    body = slice(onset + 1000, end - 1000)
    assert rms(left[body]) == pytest.approx(0.6 / np.sqrt(2), rel=0.03)
    assert rms(right[body]) == pytest.approx(0.2 / np.sqrt(2), rel=0.03)
    assert np.abs(samples[:, : onset - 200]).max() < 0.02  # silence stays silent (no shifted copy)


def test_decode_audio_packed_pcm_is_sample_exact_on_the_time_axis(tmp_path):
    # A track starting 0.1 s (4800 samples) after the video: it must land at sample 4800, not 0, and the
    # interleaved (packed) PCM must come back as (2, n) with left and right where they were.
    n, start = 100 * 1600 - 4_800, 4_800
    signal = noise(n)
    path = build_clip(
        tmp_path / "c.mov", 100, signal, codec="pcm_f32le", audio_start=start, container_format="mov"
    )
    samples, rate = decode_audio(path)
    assert rate == 48_000
    assert samples.shape == (2, start + n)
    assert not samples[:, :start].any()
    np.testing.assert_array_equal(samples[:, start:], signal)


# Integer sample formats must be scaled to [-1, 1] like AAC's float output: unscaled 16-bit samples would shift
# the log-mel features by log(32768**2) ~ 20.8.
def test_decode_audio_scales_16_bit_pcm_to_unit_range(tmp_path):
    n = 100 * 1600
    ints = (noise(n) * 32768).astype(np.int16)
    path = build_clip(tmp_path / "c.mov", 100, ints, codec="pcm_s16le", container_format="mov")
    samples, _ = decode_audio(path)
    np.testing.assert_allclose(samples[:, :n], ints / 32768.0, atol=1e-6)


# ------------------------------------------------------------------------------------------- central_audio


def test_central_audio_is_the_channel_mean_of_the_window(tmp_path):
    n = 100 * 1600
    tone = gated_tone(n, 0, n)
    path = build_clip(tmp_path / "c.mp4", 100, stereo(tone, 0.6, 0.2))
    out = central_audio(path)
    assert out.shape == (140_800,) and out.dtype == np.float32
    # mean of the channels: 0.4 A. Left only would be 0.6, right only 0.2, their sum 0.8.
    assert rms(out) == pytest.approx(0.4 / np.sqrt(2), rel=0.03)
    expected = 0.4 * tone[9_600:150_400]  # the window of a 100-frame clip: frames 6..94
    assert rms(out - expected) < 0.05 * rms(expected)


def test_central_audio_exact_on_lossless_pcm(tmp_path):
    n = 103 * 1600
    signal = noise(n, seed=1)
    path = build_clip(tmp_path / "c.mov", 103, signal, codec="pcm_f32le", container_format="mov")
    out = central_audio(path)
    # 103 frames: kept frames 7..94 -> samples 11,200 .. 152,000; mean of left and right
    expected = (signal[0, 11_200:152_000] + signal[1, 11_200:152_000]) / 2
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-7)


@pytest.mark.parametrize(("n_frames", "first"), [(100, 6), (103, 7)])
def test_central_audio_window_starts_at_the_first_kept_frame(tmp_path, n_frames, first):
    # a tone from the first kept frame's first sample, 10 frames long: it must span output [0, 16000)
    n = n_frames * 1600
    onset = 1600 * first
    tone = gated_tone(n, onset, onset + 16_000)
    out = central_audio(build_clip(tmp_path / "c.mp4", n_frames, stereo(tone, 0.5, 0.5)))
    loud = above(out, 0.25)
    assert 0 <= loud[0] <= TOL
    assert abs(loud[-1] - 15_999) <= TOL  # a window one frame late would end at 14,399, early at 17,599
    assert np.abs(out[16_000 + 4 * TOL :]).max() < 0.02


def test_central_audio_pads_a_track_at_most_one_frame_short(tmp_path):
    # 100 frames need samples up to 150,400; a track of 149,000 samples is 1,400 short (<= 1,600): zeros
    signal = noise(149_000, seed=2)
    path = build_clip(tmp_path / "c.mov", 100, signal, codec="pcm_f32le", container_format="mov")
    out = central_audio(path)
    assert out.shape == (140_800,)
    np.testing.assert_allclose(out[:139_400], signal[:, 9_600:].mean(axis=0), rtol=0, atol=1e-7)
    assert not out[139_400:].any()


@pytest.mark.parametrize(("length", "ok"), [(148_800, True), (148_799, False)])
def test_central_audio_shortfall_limit_is_one_frame(tmp_path, length, ok):
    path = build_clip(tmp_path / "c.mov", 100, noise(length), codec="pcm_f32le", container_format="mov")
    if ok:
        assert central_audio(path).shape == (140_800,)
    else:
        with pytest.raises(AudioError, match="truncated") as err:
            central_audio(path)
        assert str(err.value) == (
            f"{path}: audio track has 148799 samples, the window needs 150400 (video 100 frames); "
            f"the file is truncated: {audio.CLIP_REMEDY}"
        )


# ------------------------------------------------------------------------------------------------- errors


def test_no_audio_track(tmp_path):
    path = build_clip(tmp_path / "02-01-05-01-01-01-01.mp4", 100, None)
    with pytest.raises(AudioError, match="no audio track") as err:
        central_audio(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("faststart", [False, True], ids=["index-at-end", "index-at-start"])
def test_truncated_file(tmp_path, faststart):
    whole = build_clip(tmp_path / "whole.mp4", 100, noise(160_000), faststart=faststart)
    data = whole.read_bytes()
    path = tmp_path / "01-01-05-01-01-01-01.mp4"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match="truncated") as err:
        central_audio(path)
    assert str(err.value).startswith(f"{path}: ")


def test_too_few_frames_mentions_88(tmp_path):
    path = build_clip(tmp_path / "c.mp4", 80, noise(80 * 1600))
    with pytest.raises(AudioError, match="80 video frames, fewer than the 88") as err:
        central_audio(path)
    assert str(err.value).startswith(f"{path}: ")


def test_wrong_sample_rate(tmp_path):
    path = build_clip(tmp_path / "c.mp4", 100, noise(round(100 * 44_100 / 30)), rate=44_100)
    with pytest.raises(AudioError, match=r"audio is 44100 Hz, expected 48000 Hz") as err:
        central_audio(path)
    assert str(path) in str(err.value)


def test_wrong_frame_rate(tmp_path):
    path = build_clip(tmp_path / "c.mp4", 100, noise(100 * 1920), fps=25)
    with pytest.raises(AudioError, match=r"video is 25\.00 fps, expected 30") as err:
        central_audio(path)
    assert str(path) in str(err.value)


def test_not_a_video(tmp_path):
    path = tmp_path / "c.mp4"
    path.write_bytes(b"\x00" * 4096)
    with pytest.raises(AudioError, match="corrupt or truncated") as err:
        central_audio(path)
    assert str(path) in str(err.value)


# ---------------------------------------------------------------------------------------------------- CLI


def write_clip_set(folder: Path, specs: dict[str, tuple[int, float]]) -> Path:
    """Clips named like RAVDESS files (name -> (frames, amplitude)) and their clips.csv."""
    paths = []
    for name, (n_frames, amp) in specs.items():
        n = n_frames * 1600
        actor_dir = folder / f"Actor_{name[-2:]}"
        actor_dir.mkdir(parents=True, exist_ok=True)
        paths.append(build_clip(actor_dir / f"{name}.mp4", n_frames, stereo(gated_tone(n, 0, n), amp, amp)))
    table_path = folder / "clips.csv"
    table_path.write_text(clips.clip_table(paths, paper.FOLDS).to_csv(index=False))
    return table_path


def test_main_writes_the_actor_npz(tmp_path, capsys):
    specs = {
        "01-01-05-01-01-01-01": (100, 0.2),
        "01-01-03-02-01-01-01": (95, 0.5),
        "01-01-05-01-01-01-02": (100, 0.3),  # another actor: not in the output
    }
    table_path = write_clip_set(tmp_path, specs)
    out = tmp_path / "audio" / "Actor_01.npz"
    assert audio.main(["--clips", str(table_path), "--actor", "1", "--out", str(out)]) == 0
    with np.load(out) as data:
        assert sorted(data.files) == ["audio", "clips"]
        names = data["clips"].tolist()
        wave = data["audio"]
    assert names == ["01-01-03-02-01-01-01", "01-01-05-01-01-01-01"]  # clip-table (sorted) order
    assert wave.shape == (2, 140_800)
    assert rms(wave[0]) == pytest.approx(0.5 / np.sqrt(2), rel=0.03)
    assert rms(wave[1]) == pytest.approx(0.2 / np.sqrt(2), rel=0.03)
    np.testing.assert_array_equal(wave[0], central_audio(tmp_path / "Actor_01" / f"{names[0]}.mp4"))
    assert "actor 1: 2 clips" in capsys.readouterr().out


def test_main_exits_1_naming_the_bad_clip(tmp_path, capsys):
    specs = {"01-01-05-01-01-01-01": (100, 0.2), "01-01-03-02-01-01-01": (80, 0.5)}
    table_path = write_clip_set(tmp_path, specs)
    out = tmp_path / "audio" / "Actor_01.npz"
    assert audio.main(["--clips", str(table_path), "--actor", "1", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "01-01-03-02-01-01-01.mp4" in err and "88" in err
    assert not out.exists()
