"""The real-speech seed benchmark on a tiny synthetic Emo-DB folder: names, windows, folds and LMS by hand,
the CLI end to end against an independent ``tables.seed_summary``, its errors, and seeded determinism."""

import json
import math
import wave

import numpy as np
import pytest
import torch
import torchaudio
import yaml

from avemotion import bench, bench_seeds, paper, tables
from avemotion.features import LMSConfig, log_mel

SPEAKERS = (3, 8, 9, 10)
TONES = {"W": 2000, "T": 440}  # Hz: anger a high tone, sadness a low one
# version -> seconds: "a" shorter than the 2.93 s window (padded), "b" longer (cut). Every duration x tone is
# a whole number of periods, so a file's first and last samples are near the tone's peak, never zero.
DURATIONS = {"a": 1.0, "b": 3.5}
RATE = 22_050
ODD_FILE, ODD_RATE = "03a01Wa.wav", 16_000  # the one file at 16 kHz
N_FILES = len(SPEAKERS) * len(TONES) * len(DURATIONS)  # 16


def write_wav(path, samples: np.ndarray, rate: int) -> None:
    """float samples in [-1, 1], (n,) mono or (n, 2) stereo -> 16-bit PCM wav (the stdlib's writer)."""
    pcm = np.round(np.asarray(samples) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1 if pcm.ndim == 1 else pcm.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def tone(freq: float, seconds: float, rate: int) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return 0.3 * np.cos(2 * np.pi * freq * t)


def resampled_length(n: int, rate: int) -> int:
    return math.ceil(n * paper.SAMPLE_RATE / rate)


@pytest.fixture(scope="module")
def emodb(tmp_path_factory):
    folder = tmp_path_factory.mktemp("emodb")
    for speaker in SPEAKERS:
        for letter, freq in TONES.items():
            for version, seconds in DURATIONS.items():
                name = f"{speaker:02d}a01{letter}{version}.wav"
                rate = ODD_RATE if name == ODD_FILE else RATE
                write_wav(folder / name, tone(freq, seconds, rate), rate)
    (folder / "SOURCES.md").write_text("not a wav: ignored\n")
    return folder


@pytest.fixture(scope="module")
def base(root, tmp_path_factory):
    """config.yaml with the CPU's fast path off (no torch.compile in a unit test; the same function)."""
    config = yaml.safe_load((root / "config.yaml").read_text())
    config["training"]["cpu_precision"] = "float32"
    config["training"]["compile"] = False
    path = tmp_path_factory.mktemp("config") / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def loaded(emodb, base):
    recordings = bench_seeds.find_recordings(emodb)
    windows, padded, seconds = bench_seeds.load_windows(recordings)
    config = bench_seeds.avcfg.load_config(base)
    return recordings, windows, padded, seconds, config


def test_file_names_parse_and_bad_ones_are_named(tmp_path):
    rec = bench_seeds.parse_name(tmp_path / "03a01Fa.wav")
    assert (rec.speaker, rec.text, rec.emotion, rec.version) == (3, "a01", "happiness", "a")
    assert bench_seeds.parse_name(tmp_path / "16b10Wd.wav").speaker == 16
    assert bench_seeds.EMOTIONS == ("anger", "boredom", "disgust", "fear", "happiness", "neutral", "sadness")
    for bad in ("3a01Fa.wav", "03a01Xa.wav", "03a01Fa.mp3", "03a1Fa.wav"):
        with pytest.raises(bench_seeds.SeedBenchError, match="not an Emo-DB file name") as e:
            bench_seeds.parse_name(tmp_path / bad)
        assert str(tmp_path / bad) in str(e.value)


def test_centre_window_pads_equally_and_cuts_equally():
    window, padded = bench_seeds.centre_window(np.ones(100), n=140)
    assert padded and len(window) == 140
    assert (window[:20] == 0).all() and (window[20:120] == 1).all() and (window[120:] == 0).all()
    window, _ = bench_seeds.centre_window(np.ones(100), n=141)  # odd shortfall: 20 zeros before, 21 after
    assert np.flatnonzero(window).tolist() == list(range(20, 120))
    window, padded = bench_seeds.centre_window(np.arange(11.0), n=4)  # surplus 7: 3 cut before, 4 after
    assert not padded and window.tolist() == [3, 4, 5, 6]
    window, padded = bench_seeds.centre_window(np.arange(4.0), n=4)
    assert not padded and window.tolist() == [0, 1, 2, 3]


def test_resampling_gives_48_khz_lengths_and_keeps_the_tone():
    for n, rate in ((22_050, 22_050), (16_000, 16_000), (1000, 22_050), (11_025, 22_050)):
        out = bench_seeds.resample(np.zeros(n, dtype=np.float32), rate)
        assert len(out) == resampled_length(n, rate), (n, rate)  # 48000, 48000, 2177, 24000
    assert resampled_length(1000, 22_050) == 2177
    out = bench_seeds.resample(tone(440, 1.0, 22_050).astype(np.float32), 22_050)
    spectrum = np.abs(np.fft.rfft(out))  # 48000 samples: 1 Hz per bin
    assert int(spectrum.argmax()) == 440


def test_stereo_is_averaged_to_mono_and_the_rate_read_from_the_file(tmp_path):
    path = tmp_path / "08a01Wa.wav"
    write_wav(path, np.column_stack([np.full(500, 0.5), np.full(500, 0.25)]), 8000)
    samples, rate = bench_seeds.read_mono(path)
    assert rate == 8000 and samples.shape == (500,)
    # int16 16384 and 8192 (0.5 and 0.25 of 32767, rounded) scaled by 32768, averaged.
    np.testing.assert_allclose(samples, (16384 + 8192) / 2 / 32768, atol=1 / 32768)


def test_windows_are_centred_and_padded_ones_counted(loaded):
    recordings, windows, padded, seconds, _ = loaded
    assert len(recordings) == N_FILES and windows.shape == (N_FILES, paper.N_SAMPLES)
    assert seconds.tolist() == [DURATIONS[r.version] for r in recordings]
    for rec, window, short in zip(recordings, windows, padded, strict=True):
        rate = ODD_RATE if rec.path.name == ODD_FILE else RATE
        length = resampled_length(round(DURATIONS[rec.version] * rate), rate)
        assert short == (length < paper.N_SAMPLES) == (rec.version == "a")
        if short:
            nonzero = np.flatnonzero(window)
            before, after = nonzero[0], paper.N_SAMPLES - 1 - nonzero[-1]
            assert nonzero[-1] - nonzero[0] + 1 == length == 48_000  # 1 s at either rate
            assert before == after == (paper.N_SAMPLES - 48_000) // 2 == 46_400
        else:
            assert np.count_nonzero(window[:10]) == 10 and np.count_nonzero(window[-10:]) == 10
    assert int(padded.sum()) == N_FILES // 2


def test_speaker_folds_pair_the_sorted_speakers():
    emodb = [16, 3, 8, 9, 10, 11, 12, 13, 14, 15, 3, 8]  # unsorted, repeated: one entry per recording
    folds = bench_seeds.speaker_folds(emodb)
    assert folds == {0: (3, 8), 1: (9, 10), 2: (11, 12), 3: (13, 14), 4: (15, 16)}
    assert bench_seeds.speaker_folds(emodb, 3) == {0: (3, 8, 9, 10), 1: (11, 12, 13), 2: (14, 15, 16)}
    assert bench_seeds.speaker_folds(SPEAKERS, 2) == {0: (3, 8), 1: (9, 10)}
    for n in (1, 11):
        with pytest.raises(bench_seeds.SeedBenchError, match=f"--folds {n}: needs 2 to 10 folds"):
            bench_seeds.speaker_folds(emodb, n)


def test_lms_has_the_paper_shape_and_the_tone_in_its_mel_band(loaded):
    recordings, windows, _, _, config = loaded
    lms = bench_seeds.lms_features(windows, config, chunk=5)  # 16 recordings: chunks of 5, 5, 5, 1
    assert lms.shape == (N_FILES, paper.N_FRAMES, 24) and np.isfinite(lms).all()
    np.testing.assert_array_equal(lms, log_mel(windows, LMSConfig(**config["features"]["lms"])))
    # The band whose triangle weighs the tone's FFT bin most (10 Hz bins: 48 kHz / 4800), from torchaudio's
    # own filter bank, is the loudest band of the central frame (inside every recording).
    lms_cfg = config["features"]["lms"]
    bank = torchaudio.functional.melscale_fbanks(
        lms_cfg["n_fft"] // 2 + 1, lms_cfg["f_min"], lms_cfg["f_max"], lms_cfg["n_mels"], paper.SAMPLE_RATE
    )
    letters = {v: k for k, v in bench_seeds.EMOTION_LETTERS.items()}
    for rec, spec in zip(recordings, lms, strict=True):
        freq = TONES[letters[rec.emotion]]
        assert int(spec[paper.N_FRAMES // 2].argmax()) == int(bank[freq // 10].argmax()), rec.path.name


def test_recordings_table_labels_in_alphabetical_order(loaded):
    table = bench_seeds.recordings_table(loaded[0])
    assert list(table.columns) == ["clip", "actor", "emotion", "label"]
    row = table[table["clip"] == "09a01Ta"].iloc[0]
    assert (row["actor"], row["emotion"], row["label"]) == (9, "sadness", 6)
    assert set(table.loc[table["emotion"] == "anger", "label"]) == {0}


def test_the_cli_writes_the_grid_and_its_independent_summary(emodb, base, tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["seeds", "--data", str(emodb), "--base", str(base), "--epochs", "1", "--seeds", "1", "2"]
    assert bench.main([*argv, "--folds", "2", "--threads", "2", "--out-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "seeds.json").read_text())
    grid = np.array(result["accuracy_percent"])
    assert grid.shape == (2, 2)  # (folds, seeds)
    assert ((grid >= 0) & (grid <= 100)).all()
    # 2 speakers x 2 emotions x 2 files = 8 test recordings a fold: every accuracy is a multiple of 12.5 %.
    np.testing.assert_allclose(grid / 12.5, np.round(grid / 12.5), atol=1e-9)
    expected = tables.seed_summary(grid)
    assert result["summary"].keys() == expected.keys()
    for key, value in expected.items():
        assert result["summary"][key] == (pytest.approx(value) if isinstance(value, float) else value), key
    np.testing.assert_allclose(result["fold_std_over_seeds"], grid.std(axis=1, ddof=1))
    np.testing.assert_allclose(result["seed_mean_over_folds"], grid.mean(axis=0))
    assert result["folds"] == {"0": [3, 8], "1": [9, 10]} and result["seeds"] == [1, 2]
    assert result["counts"] == {
        "recordings": N_FILES, "speakers": 4, "padded": N_FILES // 2,
        "seconds": {"min": 1.0, "median": 2.25, "max": 3.5},
        "per_emotion": {e: N_FILES // 2 if e in ("anger", "sadness") else 0 for e in bench_seeds.EMOTIONS},
    }  # fmt: skip
    assert (result["epochs"], result["epochs_override"], result["precision"]) == (1, True, "float32")
    assert np.array(result["seconds"]).shape == (2, 2) and result["seconds_per_model"]["total"] > 0
    for seed in (1, 2):
        for fold in (0, 1):
            assert f"seed {seed} fold {fold} (speakers {'03+08' if fold == 0 else '09+10'})" in printed
    assert "zero-padded equally on both sides" in printed and "--epochs override" in printed
    report = (out / "seeds.md").read_text()
    assert f"| 1 | {grid[0, 0]:.1f} | {grid[1, 0]:.1f} | {grid[:, 0].mean():.1f} |" in report
    assert f"{expected['ci_low']:.2f} .. {expected['ci_high']:.2f} (t over seed means)" in report


def test_the_same_seed_gives_the_same_model_and_another_seed_another(loaded, base):
    recordings, windows, _, _, config = loaded
    table = bench_seeds.recordings_table(recordings)
    features = bench_seeds.lms_features(windows, config)
    spec = bench_seeds.base_spec(config, epochs=1)

    def run(seed):
        return bench_seeds.train_one(spec, table, features, 1, (9, 10), seed, threads=1)

    first, again, other = run(5), run(5), run(6)
    assert first["metrics"]["accuracy"] == again["metrics"]["accuracy"]
    assert first["metrics"]["n_test"] == 8 and first["predictions"]["actor"].isin([9, 10]).all()
    probs = [r["predictions"].filter(like="p_").to_numpy() for r in (first, again, other)]
    assert np.array_equal(probs[0], probs[1])
    assert not np.allclose(probs[0], probs[2])
    assert torch.equal(
        first["checkpoint"]["state_dict"]["head.weight"], again["checkpoint"]["state_dict"]["head.weight"]
    )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing", "no such folder"),
        (lambda d: d, "holds no .wav files"),
        (lambda d: write_wav(d / "speaker3.wav", np.zeros(10), 8000) or d, "speaker3.wav: not an Emo-DB"),
    ],
)
def test_bad_data_folders_are_one_error_line(tmp_path, base, capsys, make, message):
    (tmp_path / "notes.txt").write_text("x")
    data = make(tmp_path)
    argv = ["seeds", "--data", str(data), "--base", str(base), "--out-dir", str(tmp_path / "out")]
    assert bench.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert str(tmp_path) in err[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--seeds", "1", "1"], "--seeds 1 1: give distinct seeds >= 0"),
        (["--epochs", "0"], "--epochs 0: needs at least 1"),
        (["--threads", "0"], "--threads 0: needs at least 1"),
        (["--folds", "5"], "--folds 5: needs 2 to 4 folds for 4 speakers (03, 08, 09, 10)"),
    ],
)
def test_bad_options_are_one_error_line(emodb, base, tmp_path, capsys, option, message):
    argv = ["seeds", "--data", str(emodb), "--base", str(base), "--out-dir", str(tmp_path / "out")]
    argv += ["--folds", "2", *option]  # the last --folds given counts
    assert bench.main(argv) == 1
    assert capsys.readouterr().err.strip() == f"error: {message}"
    assert not (tmp_path / "out").exists()
