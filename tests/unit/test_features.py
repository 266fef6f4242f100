"""Tests for avemotion.features: the log-mel spectrogram against an independent numpy implementation, its
time alignment with the video frames, the audio loader and the CLI.

The reference below is written from the definitions, not from torchaudio: periodic Hann window, reflect
padding, frames sliced every hop, |rfft|^2, an HTK mel filterbank (mel = 2595 log10(1 + f / 700), triangles
between n_mels + 2 equally spaced mel points from f_min to f_max, evaluated at the rfft bin frequencies; no
area normalisation), then log(power + floor).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from avemotion import features
from avemotion.features import LMSConfig, load_audio, log_mel

RATE = 48_000
N_SAMPLES = 140_800


def hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(n_fft: int, n_mels: int, f_min: float, f_max: float, rate: int = RATE) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels) triangular HTK filters on the rfft bin frequencies k * rate / n_fft."""
    freqs = np.arange(n_fft // 2 + 1) * rate / n_fft
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    bank = np.zeros((freqs.size, n_mels))
    for m in range(n_mels):
        lo, centre, hi = edges[m], edges[m + 1], edges[m + 2]
        rising = (freqs - lo) / (centre - lo)
        falling = (hi - freqs) / (hi - centre)
        bank[:, m] = np.clip(np.minimum(rising, falling), 0.0, None)
    return bank


def reference_power(audio: np.ndarray, cfg: LMSConfig, frames: int = 88) -> np.ndarray:
    """(N, samples) -> (N, frames, n_mels) mel power, float64."""
    if cfg.frames_rule == "frame_centred":
        pad = cfg.hop_length  # one video frame each side, then frames start at 0
    elif cfg.frames_rule == "centre_drop_last":
        pad = cfg.n_fft // 2  # a centred STFT
    else:
        raise AssertionError(cfg.frames_rule)
    x = np.pad(np.asarray(audio, dtype=np.float64), ((0, 0), (pad, pad)), mode="reflect")
    n_frames = 1 + (x.shape[1] - cfg.n_fft) // cfg.hop_length
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(cfg.n_fft) / cfg.n_fft)  # periodic Hann
    starts = cfg.hop_length * np.arange(n_frames)
    segments = x[:, starts[:, None] + np.arange(cfg.n_fft)[None, :]] * window  # (N, T, n_fft)
    power = np.abs(np.fft.rfft(segments, axis=-1)) ** 2  # (N, T, n_fft // 2 + 1)
    mel = power @ mel_filterbank(cfg.n_fft, cfg.n_mels, cfg.f_min, cfg.f_max)  # (N, T, n_mels)
    assert n_frames >= frames
    return mel[:, :frames]


@pytest.fixture(scope="module")
def random_audio() -> np.ndarray:
    return (0.1 * np.random.default_rng(0).standard_normal((2, N_SAMPLES))).astype(np.float32)


# Worked by hand for the default 24 bands up to 17 kHz: 17 kHz = 3640.46 mel; the 26 mel points are 145.618 mel
# apart, so points 6, 7, 8 are 873.71, 1019.33, 1164.95 mel = 819.81, 1029.43, 1267.97 Hz. Band m rises from
# point m to point m + 1 and falls to point m + 2 (linearly in Hz), so 1 kHz lies only in band 6 (rising,
# weight (1000 - 819.81) / 209.62 = 0.8596) and band 5 (falling, weight 0.1404).
W6_1KHZ, W5_1KHZ = 0.8596, 0.1404


def band6_weight(f: float) -> float:
    return (f - 819.806) / (1029.430 - 819.806)


def test_reference_filterbank_by_hand():
    assert hz_to_mel(1000.0) == pytest.approx(999.99, abs=0.01)
    assert hz_to_mel(17_000.0) == pytest.approx(3640.46, abs=0.01)
    assert mel_to_hz(7 * 3640.4612 / 25) == pytest.approx(1029.43, abs=0.01)
    bank = mel_filterbank(4800, 24, 0.0, 17_000.0)
    assert bank.shape == (2401, 24)
    assert bank[100, 6] == pytest.approx(W6_1KHZ, abs=1e-4)  # bin 100 = 1000 Hz (10 Hz bins)
    assert bank[100, 5] == pytest.approx(W5_1KHZ, abs=1e-4)
    assert np.flatnonzero(bank[100]).tolist() == [5, 6]
    assert not bank[1701:].any()  # nothing above 17 kHz (bin 1700)


@pytest.mark.parametrize("rule", ["frame_centred", "centre_drop_last"])
def test_log_mel_matches_the_numpy_reference(random_audio, rule):
    cfg = LMSConfig(frames_rule=rule)
    got = log_mel(random_audio, cfg)
    assert got.shape == (2, 88, 24) and got.dtype == np.float32
    ref_power = reference_power(random_audio, cfg)
    np.testing.assert_allclose(np.exp(got.astype(np.float64)) - cfg.log_floor, ref_power, rtol=1e-4)
    np.testing.assert_allclose(got, np.log(ref_power + cfg.log_floor), rtol=0, atol=1e-4)


def test_the_two_rules_differ_by_half_a_video_frame(random_audio):
    # frame_centred frame k is centred on sample 1600 k + 800, centre_drop_last frame j on 1600 j: different
    a = log_mel(random_audio, LMSConfig(frames_rule="frame_centred"))
    b = log_mel(random_audio, LMSConfig(frames_rule="centre_drop_last"))
    assert np.abs(a - b).max() > 0.5


def test_log_mel_other_settings_match_the_reference(random_audio):
    cfg = LMSConfig(n_mels=40, f_min=50.0, f_max=8000.0, log_floor=1e-3)
    got = log_mel(random_audio[:1], cfg)
    assert got.shape == (1, 88, 40)
    np.testing.assert_allclose(got, np.log(reference_power(random_audio[:1], cfg) + 1e-3), atol=1e-4)


def test_silence_is_log_floor():
    got = log_mel(np.zeros((1, N_SAMPLES), np.float32), LMSConfig())
    np.testing.assert_allclose(got, np.log(1e-6), rtol=1e-6)


def test_a_1khz_tone_peaks_in_the_band_holding_1khz():
    a = 0.5
    t = np.arange(N_SAMPLES) / RATE
    tone = (a * np.sin(2 * np.pi * 1000.0 * t))[None].astype(np.float32)
    got = log_mel(tone, LMSConfig())[0]  # (88, 24)
    assert (got.argmax(axis=1) == 6).all()
    # By hand: 1 kHz is exactly rfft bin 100 (100 cycles per 4800-sample window), so the periodic Hann window
    # leaves |X| = a N / 4 at bin 100 and a N / 8 at bins 99 and 101 (N = 4800): powers 360,000 and 90,000.
    # The edge frames see the reflect padding's phase jump and are left out.
    inner = got[1:-1]
    band6 = 360_000 * W6_1KHZ + 90_000 * (band6_weight(990.0) + band6_weight(1010.0))
    band5 = 360_000 * W5_1KHZ + 90_000 * ((1 - band6_weight(990.0)) + (1 - band6_weight(1010.0)))
    np.testing.assert_allclose(inner[:, 6], np.log(band6 + 1e-6), atol=1e-3)  # 13.048
    np.testing.assert_allclose(inner[:, 5], np.log(band5 + 1e-6), atol=1e-3)
    others = np.delete(inner, [5, 6], axis=1)
    assert others.max() < np.log(1e-5)  # no weight at 990..1010 Hz: power ~ 0, at the log floor


@pytest.mark.parametrize("k", [0, 1, 40, 86, 87])
def test_frame_centred_frame_k_hears_video_frame_k(k):
    # a noise burst on video frame k's own audio, samples [1600 k, 1600 k + 1600), over faint noise
    rng = np.random.default_rng(k)
    x = 1e-3 * rng.standard_normal(N_SAMPLES)
    x[1600 * k : 1600 * (k + 1)] += rng.standard_normal(1600)
    energy = np.exp(log_mel(x[None].astype(np.float32), LMSConfig())[0]).sum(axis=1)  # (88,)
    assert int(np.argmax(energy)) == k
    for other in (k - 3, k + 3):
        if 0 <= other < 88:
            assert energy[k] > 100 * energy[other]  # frame k +- 3 does not overlap the burst at all
    for other in (k - 1, k + 1):
        if 0 <= other < 88:
            assert energy[k] > 2 * energy[other]  # +- 1 overlaps only the Hann window's tails


@pytest.mark.parametrize("k", [1, 40, 86])
def test_centre_drop_last_splits_video_frame_k_between_frames_k_and_k_plus_1(k):
    # frame j is centred on sample 1600 j: a burst on [1600 k, 1600 k + 1600) sits symmetrically between
    # the centres of frames k and k + 1, so those two hear it about equally and more than any other frame
    rng = np.random.default_rng(k)
    x = 1e-3 * rng.standard_normal(N_SAMPLES)
    x[1600 * k : 1600 * (k + 1)] += rng.standard_normal(1600)
    energy = np.exp(log_mel(x[None].astype(np.float32), LMSConfig(frames_rule="centre_drop_last"))[0])
    energy = energy.sum(axis=1)
    assert set(np.argsort(energy)[-2:]) == {k, k + 1}
    assert energy[k] == pytest.approx(energy[k + 1], rel=0.1)
    assert min(energy[k], energy[k + 1]) > 5 * max(energy[k - 1], energy[k + 2] if k + 2 < 88 else 0)


def test_unknown_frames_rule_raises(random_audio):
    with pytest.raises(ValueError, match=r"features\.lms\.frames_rule: unknown rule 'centred'"):
        log_mel(random_audio, LMSConfig(frames_rule="centred"))


def test_log_mel_wants_clips_by_samples():
    with pytest.raises(ValueError, match=r"expected \(clips, samples\) audio, got shape \(140800,\)"):
        log_mel(np.zeros(N_SAMPLES, np.float32), LMSConfig())


def test_too_short_audio_raises():
    # 80 video frames of audio: 1 + (128,000 + 3,200 - 4,800) / 1600 = 80 frames < 88
    with pytest.raises(ValueError, match="80 spectrogram frames from 131200 samples, need 88"):
        log_mel(np.zeros((1, 80 * 1600), np.float32), LMSConfig())


# -------------------------------------------------------------------------------------------- load_audio


def write_npz(path: Path, names: list[str], audio: np.ndarray) -> Path:
    np.savez(path, clips=np.array(names), audio=audio)
    return path


def test_load_audio_follows_the_table_order(tmp_path):
    a = write_npz(tmp_path / "Actor_01.npz", ["c1", "c2"], np.array([[1.0, 1.0], [2.0, 2.0]], np.float32))
    b = write_npz(tmp_path / "Actor_02.npz", ["c3"], np.array([[3.0, 3.0]], np.float32))
    table = pd.DataFrame({"clip": ["c3", "c1", "c2"]})
    got = load_audio(table, [a, b])
    np.testing.assert_array_equal(got, [[3.0, 3.0], [1.0, 1.0], [2.0, 2.0]])
    np.testing.assert_array_equal(load_audio(pd.DataFrame({"clip": ["c2"]}), [b, a]), [[2.0, 2.0]])


def test_load_audio_missing_clip_raises(tmp_path):
    a = write_npz(tmp_path / "Actor_01.npz", ["c1"], np.zeros((1, 4), np.float32))
    table = pd.DataFrame({"clip": ["c1", "c7", "c8"]})
    with pytest.raises(ValueError, match=r"no extracted audio for 2 clips, e\.g\. \['c7', 'c8'\]"):
        load_audio(table, [a])


# ---------------------------------------------------------------------------------------------------- CLI


def test_main_writes_features_and_index(tmp_path, random_audio, capsys):
    names = ["01-01-05-01-01-01-01", "01-01-03-01-01-01-01", "01-01-02-01-01-01-02"]
    write_npz(tmp_path / "Actor_01.npz", names[:2], random_audio)
    write_npz(tmp_path / "Actor_02.npz", names[2:], random_audio[:1] * 0.5)
    order = [names[1], names[2], names[0]]  # the clip table's order, not the npz order
    pd.DataFrame({"clip": order, "actor": [1, 2, 1]}).to_csv(tmp_path / "clips.csv", index=False)
    out, index = tmp_path / "lms" / "features.npy", tmp_path / "lms" / "index.csv"
    params = json.dumps(
        {"n_mels": 24, "n_fft": 4800, "hop_length": 1600, "f_min": 0.0, "f_max": 17000.0,
         "frames_rule": "frame_centred", "log_floor": 1e-6}
    )  # fmt: skip
    argv = ["lms", "--clips", str(tmp_path / "clips.csv"), "--inputs", str(tmp_path / "Actor_01.npz"),
            str(tmp_path / "Actor_02.npz"), "--params", params, "--out", str(out), "--index", str(index)]  # fmt: skip
    assert features.main(argv) == 0
    feats = np.load(out)
    assert feats.dtype == np.float32 and feats.shape == (3, 88, 24)
    expected_audio = np.stack([random_audio[1], 0.5 * random_audio[0], random_audio[0]])
    np.testing.assert_allclose(feats, np.log(reference_power(expected_audio, LMSConfig()) + 1e-6), atol=1e-4)
    # halving the amplitude lowers the log power by log(4) where the floor is negligible
    np.testing.assert_allclose(feats[2] - feats[1], np.log(4.0), atol=1e-3)
    idx = pd.read_csv(index, dtype={"clip": str})
    assert list(idx.columns) == ["clip", "row"]
    assert idx["clip"].tolist() == order and idx["row"].tolist() == [0, 1, 2]
    assert "lms: (3, 88, 24)" in capsys.readouterr().out


def _main_on_actor_01(tmp_path, out, index) -> int:
    """The CLI on tmp_path's clips.csv and Actor_01.npz with default LMS settings."""
    argv = ["lms", "--clips", str(tmp_path / "clips.csv"), "--inputs", str(tmp_path / "Actor_01.npz"),
            "--params", "{}", "--out", str(out), "--index", str(index)]  # fmt: skip
    return features.main(argv)


def test_main_exits_1_when_a_clip_has_no_audio(tmp_path, random_audio, capsys):
    write_npz(tmp_path / "Actor_01.npz", ["a"], random_audio[:1])
    pd.DataFrame({"clip": ["a", "b"]}).to_csv(tmp_path / "clips.csv", index=False)
    out, index = tmp_path / "features.npy", tmp_path / "index.csv"
    assert _main_on_actor_01(tmp_path, out, index) == 1
    assert "error: no extracted audio for 1 clips" in capsys.readouterr().err
    assert not out.exists() and not index.exists()


def test_main_exits_1_on_non_finite_features(tmp_path, random_audio, capsys):
    bad = random_audio.copy()
    bad[1, 5000] = np.nan
    write_npz(tmp_path / "Actor_01.npz", ["a", "b"], bad)
    pd.DataFrame({"clip": ["a", "b"]}).to_csv(tmp_path / "clips.csv", index=False)
    out, index = tmp_path / "features.npy", tmp_path / "index.csv"
    assert _main_on_actor_01(tmp_path, out, index) == 1
    assert "non-finite clips: ['b']" in capsys.readouterr().err
    assert not out.exists() and not index.exists()
