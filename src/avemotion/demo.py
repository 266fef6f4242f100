"""Synthetic RAVDESS-layout demo data, generated deterministically from a seed, so the pipeline runs offline.

The real RAVDESS speech archives (``Video_Speech_Actor_XX.zip`` holding ``Actor_XX/MM-VV-EE-II-SS-RR-AA.mp4``)
are a download of many gigabytes. This module writes archives with exactly that layout and naming, small
enough to build in minutes on two CPU cores, and a ground truth that later stages can be checked against:

* Video: H.264 (libx264, yuv420p) 1280x720 at 30 fps of a real face photograph (``skimage.data.astronaut()``,
  shipped inside scikit-image) cut out onto a plain background with a dark torso. The face is animated per
  emotion: a handful of facial "action units" (jaw, lip corners, lip stretch, upper lip, brows, lids, cheeks,
  nose) are smooth displacement fields (sums of Gaussians) whose activations follow the emotion, the speech
  envelope (lip sync) and blinks; head pitch/yaw/roll move the warped face by an affine. Frames are rendered at
  640x360 and scaled x2 (bilinear, swscale) when encoded, which costs no detail: the photograph's face is
  smaller than that.
* Audio: 48 kHz stereo AAC, a numpy source-filter "speech" (glottal pulse train at a jittered F0 contour,
  spectral tilt, three vowel formants per syllable plus two fixed ones, aspiration noise, consonant bursts),
  with emotion-dependent F0 level/range/contour, loudness, syllable rate, brightness, breathiness and tremor.
  Odd actors are male (F0 110-130 Hz), even actors female (190-230 Hz). The speech sits in the middle of the
  clip between stretches of low noise.
* Ground truth: the 68 iBUG/OpenFace landmarks, placed by hand on the photograph and moved by the very same
  displacement field and affine as the pixels, per clip and frame in 1280x720 pixel coordinates (integer =
  pixel centre) in ``ground_truth_landmarks.csv.gz``; the generation parameters per clip in
  ``ground_truth_clips.csv``.

Each AV clip ``01-01-EE-II-SS-RR-AA.mp4`` comes with its video-only twin ``02-...`` (same H.264 packets,
remuxed without audio, as in RAVDESS). Every actor draws from its own random stream derived from (seed, actor)
and every clip from (seed, actor, clip), so one actor generated alone is byte-identical to the same actor in a
full run, and the same seed gives byte-identical archives (fixed zip times, single-threaded encoders) on the
same software stack.

CLI: ``python -m avemotion.demo --out DIR [--seed 0] [--actors 1 2 ...] [--statements 1 2] [--repetitions 1]
[--intensities 1] [--emotions 1 .. 8] [--workers 2]``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gzip
import io
import os
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from scipy import ndimage, signal
from skimage import data as skdata
from skimage import draw

from avemotion import paper

ARCHIVE_NAME = "Video_Speech_Actor_{actor:02d}.zip"
LANDMARKS_FILE = "ground_truth_landmarks.csv.gz"
CLIPS_FILE = "ground_truth_clips.csv"
MIN_DURATION_S, MAX_DURATION_S = 2.94, 5.3  # RAVDESS speech clips span about this range
RENDER_FACTOR = 2  # frames are rendered at VIDEO_SIZE / 2 and upscaled bilinearly by swscale when encoded
RENDER_SIZE = (paper.VIDEO_SIZE[0] // RENDER_FACTOR, paper.VIDEO_SIZE[1] // RENDER_FACTOR)  # (640, 360)
ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip can hold: archives do not depend on the clock
X264_OPTIONS = {"preset": "veryfast", "crf": "28", "threads": "1"}  # one thread: bytes independent of cores
AAC_BIT_RATE = 128_000
AAC_OPTIONS = {"aac_coder": "fast"}  # FFmpeg's native encoder; "fast" is ~4x quicker than the default twoloop
_BITEXACT_CODEC = 1 << 23  # AV_CODEC_FLAG_BITEXACT: no encoder version strings in the stream
_BITEXACT_FORMAT = 0x0400  # AVFMT_FLAG_BITEXACT: no muxer version string in the file

# ---------------------------------------------------------------------------------------------------------
# Names


@dataclass(frozen=True, order=True)
class Clip:
    """One RAVDESS speech clip: the fields of its name ``MM-01-EE-II-SS-RR-AA`` except the modality."""

    actor: int
    emotion: int
    intensity: int
    statement: int
    repetition: int

    def name(self, modality: int = paper.MODALITY_AV) -> str:
        """The RAVDESS file stem, e.g. ``01-01-03-01-02-01-07`` (AV) or ``02-01-...`` (video-only)."""
        fields = (modality, paper.VOCAL_SPEECH, self.emotion, self.intensity, self.statement, self.repetition)
        return "-".join(f"{v:02d}" for v in (*fields, self.actor))


def clips_for_actor(
    actor: int,
    *,
    statements: Sequence[int] = (1, 2),
    repetitions: Sequence[int] = (1,),
    intensities: Sequence[int] = (1,),
    emotions: Sequence[int] = tuple(paper.EMOTION_CODES),
) -> list[Clip]:
    """The clips of one actor: every emotion x intensity x statement x repetition, in name order.

    Neutral exists only at intensity 1 in RAVDESS, so it is left out when ``intensities`` lacks 1.
    """
    _check_choice("actor", [actor], paper.ACTORS)
    _check_choice("emotion", emotions, tuple(paper.EMOTION_CODES))
    _check_choice("statement", statements, (1, 2))
    _check_choice("repetition", repetitions, (1, 2))
    _check_choice("intensity", intensities, (1, 2))
    clips = [
        Clip(actor, emotion, intensity, statement, repetition)
        for emotion in sorted(set(emotions))
        for intensity in sorted(set(intensities))
        if not (emotion == 1 and intensity != 1)
        for statement in sorted(set(statements))
        for repetition in sorted(set(repetitions))
    ]
    return sorted(clips, key=lambda c: c.name())


def clip_names(
    actor: int,
    *,
    statements: Sequence[int] = (1, 2),
    repetitions: Sequence[int] = (1,),
    intensities: Sequence[int] = (1,),
    emotions: Sequence[int] = tuple(paper.EMOTION_CODES),
    modality: int = paper.MODALITY_AV,
) -> list[str]:
    """File stems (no ``.mp4``) of one actor's clips for ``modality`` (1 = AV, 2 = video-only)."""
    clips = clips_for_actor(
        actor, statements=statements, repetitions=repetitions, intensities=intensities, emotions=emotions
    )
    return [c.name(modality) for c in clips]


def archive_name(actor: int) -> str:
    """``Video_Speech_Actor_XX.zip``, the RAVDESS archive name of one actor's speech videos."""
    return ARCHIVE_NAME.format(actor=actor)


def _check_choice(what: str, values: Iterable[int], allowed: Sequence[int]) -> None:
    bad = [v for v in values if v not in allowed]
    if bad:
        raise ValueError(f"{what} {bad} not in RAVDESS range {min(allowed)}..{max(allowed)}")


# ---------------------------------------------------------------------------------------------------------
# Emotion profiles: how each emotion sounds and looks (at normal intensity; strong scales the deviation from
# neutral by STRONG_GAIN). Values are hand-set after the acoustic and facial descriptions of basic emotions
# (e.g. Juslin & Laukka 2003 for prosody, FACS prototypes for faces), loud enough to be learnable.

# Facial action units driving the displacement fields (see _AU_BUMPS); activation 0 = the photograph.
AUS = (
    "jaw_open",
    "lips_close",
    "smile",
    "lip_stretch",
    "upper_lip",
    "brow_raise",
    "brow_lower",
    "inner_brow",
    "eye_open",
    "blink",
    "cheek",
    "nose_wrinkle",
)
_AU = {name: i for i, name in enumerate(AUS)}
STRONG_GAIN = 1.4


@dataclass(frozen=True)
class EmotionProfile:
    """Prosody, expression and head motion of one emotion, relative to the actor's own voice and face."""

    f0_shift_st: float  # mean F0 shift from the actor's base, semitones
    f0_range_st: float  # height of the pitch accents, semitones
    f0_slope_st: float  # F0 change over the utterance: < 0 declination, > 0 rise, semitones
    rate: float  # syllables per second
    level_db: float  # loudness relative to neutral
    tilt: float  # brightness: glottal corner at 300 Hz * 2**(1.2 tilt); > 0 tense/bright, < 0 dark/soft
    breath: float  # aspiration noise relative to voicing
    tremor: float  # depth of a 5-7 Hz F0 and amplitude tremor, 0..1
    jitter: float  # slow random F0 perturbation, relative
    aus: dict[str, float]  # static expression (activations of AUS)
    jaw_gain: float  # lip-sync mouth opening per unit speech envelope
    pitch_deg: float  # static head pitch, + = down
    yaw_deg: float  # static head turn
    roll_deg: float  # static head tilt
    nod_deg: float  # pitch oscillation amplitude
    shake_deg: float  # yaw oscillation amplitude
    sway_deg: float  # roll oscillation amplitude
    head_hz: float  # speed of the head oscillations
    lean: float  # relative scale change: > 0 towards the camera


# Prosody: F0 shift from the actor's base and accent height (semitones), F0 change over the utterance
# (semitones, < 0 falling), syllables per second, loudness (dB re neutral), tilt, breath, tremor, jitter.
_PROSODY: dict[int, tuple[float, ...]] = {
    #   shift range slope  rate  level  tilt breath tremor jitter
    1: (  0.0,  2.0, -2.0,  4.2,   0.0,  0.0, 0.10,  0.0, 0.010),  # neutral
    2: ( -1.0,  1.2, -2.0,  3.4,  -6.0, -0.6, 0.25,  0.0, 0.008),  # calm
    3: (  4.0,  6.0, -1.0,  4.8,   4.0,  0.4, 0.08,  0.0, 0.012),  # happy
    4: ( -2.0,  1.0, -4.0,  2.9,  -8.0, -0.9, 0.35,  0.3, 0.020),  # sad
    5: (  3.0,  4.0, -3.0,  5.0,   9.0,  1.2, 0.03,  0.0, 0.020),  # angry
    6: (  7.0,  3.5,  1.0,  5.4,   2.0,  0.2, 0.25,  1.0, 0.030),  # fearful
    7: ( -1.0,  3.0, -5.0,  3.6,  -2.0, -0.2, 0.15,  0.0, 0.020),  # disgust
    8: (  6.0,  9.0,  6.0,  4.4,   5.0,  0.5, 0.12,  0.0, 0.012),  # surprised
}  # fmt: skip
# Static expression (AU activations; the photograph smiles, so "smile" < 0 brings the lip corners down to
# neutral and below).
_FACE: dict[int, dict[str, float]] = {
    1: {"smile": -1.0},
    2: {"smile": -0.45, "eye_open": -0.6, "inner_brow": 0.2},
    3: {"smile": 0.3, "cheek": 1.0, "eye_open": -0.3, "brow_raise": 0.2},
    4: {"smile": -1.5, "inner_brow": 1.0, "brow_lower": 0.3, "eye_open": -0.6},
    5: {"smile": -1.3, "brow_lower": 1.3, "eye_open": 0.4, "upper_lip": 0.5, "nose_wrinkle": 0.3},
    6: {
        "smile": -1.0,
        "lip_stretch": 1.0,
        "brow_raise": 0.9,
        "inner_brow": 0.6,
        "brow_lower": 0.4,
        "eye_open": 0.9,
    },
    7: {
        "smile": -1.2,
        "upper_lip": 1.0,
        "brow_lower": 0.8,
        "eye_open": -0.4,
        "nose_wrinkle": 1.0,
        "cheek": 0.3,
    },
    8: {"smile": -0.8, "jaw_open": 0.35, "brow_raise": 1.2, "inner_brow": 0.2, "eye_open": 1.0},
}
# Lip-sync gain and head motion: static pitch (+ down), yaw, roll and oscillation amplitudes (degrees), speed
# (Hz), lean (relative scale, + towards the camera).
_MOTION: dict[int, tuple[float, ...]] = {
    #   jaw  pitch  yaw  roll  nod shake sway   hz   lean
    1: (0.8,  0.0, 0.0,  0.0, 1.0,  0.8, 0.6, 0.35,  0.00),  # neutral
    2: (0.6,  1.0, 0.0,  1.0, 0.8,  0.6, 1.0, 0.25, -0.01),  # calm
    3: (1.1, -1.0, 0.0,  2.0, 3.0,  2.0, 2.5, 0.60,  0.02),  # happy
    4: (0.5,  7.0, 0.0,  2.0, 0.8,  0.6, 1.2, 0.20, -0.03),  # sad: head down
    5: (1.3,  2.0, 0.0,  0.0, 2.5,  1.0, 0.8, 0.80,  0.05),  # angry: forward, sharp nods
    6: (0.9, -3.0, 0.0,  0.0, 1.2,  2.5, 1.2, 1.10, -0.04),  # fearful: back, fast small shakes
    7: (0.8, -1.0, 6.0,  4.0, 1.0,  2.0, 1.5, 0.40, -0.02),  # disgust: turned and tilted away
    8: (1.0, -4.0, 0.0,  0.0, 1.5,  0.8, 1.0, 0.50, -0.03),  # surprised: head back
}  # fmt: skip
EMOTIONS: dict[int, EmotionProfile] = {
    code: EmotionProfile(*_PROSODY[code], _FACE[code], *_MOTION[code]) for code in paper.EMOTION_CODES
}

# The two RAVDESS statements, "Kids are talking by the door" and "Dogs are sitting by the door", as seven
# syllables: (onset consonant, vowel, stress). Stress lengthens a syllable and carries a pitch accent.
STATEMENTS: dict[int, tuple[tuple[str, str, float], ...]] = {
    1: (("k", "ih", 1.0), ("", "aa", 0.7), ("t", "ao", 1.25), ("k", "ih", 0.8), ("b", "ay", 0.9),
        ("dh", "ah", 0.6), ("d", "ao", 1.4)),
    2: (("d", "ao", 1.0), ("", "aa", 0.7), ("s", "ih", 1.25), ("t", "ih", 0.8), ("b", "ay", 0.9),
        ("dh", "ah", 0.6), ("d", "ao", 1.4)),
}  # fmt: skip
# Adult male vowel formants F1-F3 in Hz (Hillenbrand et al. 1995, rounded); female voices scale them up.
VOWELS: dict[str, tuple[float, float, float]] = {
    "ih": (430.0, 2020.0, 2680.0),
    "aa": (770.0, 1330.0, 2520.0),
    "ao": (650.0, 1000.0, 2540.0),
    "ay": (700.0, 1500.0, 2500.0),
    "ah": (620.0, 1200.0, 2550.0),
}
# Consonant noise: (centre Hz, bandwidth Hz, duration s, level relative to the vowel).
CONSONANTS: dict[str, tuple[float, float, float, float]] = {
    "k": (2800.0, 1800.0, 0.045, 0.45),
    "t": (4500.0, 2500.0, 0.040, 0.45),
    "d": (3500.0, 2000.0, 0.025, 0.30),
    "b": (1200.0, 1000.0, 0.015, 0.25),
    "dh": (5000.0, 3000.0, 0.030, 0.15),
    "s": (6500.0, 3000.0, 0.090, 0.40),
}
_SPEECH_RMS = 0.03  # voiced RMS of a neutral clip at 0 dB (about -30 dBFS), leaves headroom for +15 dB
_NOISE_RMS = 0.0004  # room noise floor (about -68 dBFS)


# ---------------------------------------------------------------------------------------------------------
# Random parameters


@dataclass(frozen=True)
class ActorStyle:
    """What makes one synthetic actor differ from the others: voice, face appearance, mannerisms."""

    actor: int
    sex: str
    f0_hz: float  # base F0 of the voice
    formant_scale: float  # vocal tract length: female formants are higher
    level_db: float  # offsets added to the emotion's prosody
    tilt: float
    breath: float
    rate_factor: float
    stereo_db: float  # left minus right gain
    expressiveness: float  # gain on the emotion's deviation from neutral (face and head)
    au_offset: tuple[float, ...]  # identity: a fixed small expression of this face, per AU
    motion_gain: float  # gain on head motion
    face_scale: float  # output pixels (1280x720) per photograph pixel
    face_offset: tuple[float, float]  # head position shift in output pixels
    tint: tuple[float, float, float]  # RGB gains on the face
    background: tuple[int, int, int]
    clothes: tuple[int, int, int]


@dataclass(frozen=True)
class ClipParams:
    """Everything needed to synthesise one clip: its identity, its actor, and the per-clip random draws."""

    clip: Clip
    style: ActorStyle
    seed: int  # for the sample-level noise of audio and motion
    n_frames: int
    duration_s: float  # drawn duration; the clip lasts n_frames / FPS
    speech_onset_s: float
    syllable_s: tuple[float, ...]
    f0_hz: float
    f0_range_st: float
    f0_slope_st: float
    level_db: float
    tilt: float
    breath: float
    tremor: float
    jitter: float
    aus: tuple[float, ...]  # target expression, per AU
    jaw_gain: float
    pitch_deg: float
    yaw_deg: float
    roll_deg: float
    nod_deg: float
    shake_deg: float
    sway_deg: float
    head_hz: float
    lean: float
    blink_rate_hz: float

    @property
    def n_samples(self) -> int:
        """Audio length: exactly n_frames video frames."""
        return self.n_frames * paper.SAMPLES_PER_FRAME

    @property
    def speech_rate(self) -> float:
        """Syllables per second of speech."""
        return len(self.syllable_s) / sum(self.syllable_s)


def _seed_sequence(seed: int, *key: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(entropy=seed, spawn_key=key)


@cache
def actor_style(seed: int, actor: int) -> ActorStyle:
    """The actor's voice and looks, from its own random stream (seed, actor)."""
    rng = np.random.default_rng(_seed_sequence(seed, actor))
    male = actor % 2 == 1
    brightness = rng.uniform(0.85, 1.08)
    tint = tuple(float(brightness * g) for g in rng.uniform(0.9, 1.1, 3))
    grey = rng.uniform(205, 240)
    background = tuple(round(grey + d) for d in rng.uniform(-8, 8, 3))
    dark = rng.uniform(15, 55)
    clothes = tuple(round(dark + d) for d in rng.uniform(-10, 10, 3))
    au_offset = np.zeros(len(AUS))
    for name in ("smile", "upper_lip", "brow_raise", "eye_open", "cheek"):
        au_offset[_AU[name]] = rng.normal(0.0, 0.12)
    return ActorStyle(
        actor=actor,
        sex="male" if male else "female",
        f0_hz=float(rng.uniform(110, 130) if male else rng.uniform(190, 230)),
        formant_scale=float(rng.uniform(0.96, 1.04) * (1.0 if male else 1.16)),
        level_db=float(rng.normal(0, 1.5)),
        tilt=float(rng.normal(0, 0.15)),
        breath=float(rng.uniform(-0.03, 0.05) + (0.0 if male else 0.04)),
        rate_factor=float(rng.uniform(0.9, 1.1)),
        stereo_db=float(rng.uniform(-1.5, 1.5)),
        expressiveness=float(rng.uniform(0.8, 1.2)),
        au_offset=tuple(float(v) for v in au_offset),
        motion_gain=float(rng.uniform(0.6, 1.4)),
        face_scale=float(rng.uniform(2.0, 2.35)),
        face_offset=(float(rng.uniform(-40, 40)), float(rng.uniform(-20, 20))),
        tint=tint,
        background=background,
        clothes=clothes,
    )


def _intensify(neutral: float, value: float, gain: float) -> float:
    return neutral + gain * (value - neutral)


def clip_params(seed: int, clip: Clip) -> ClipParams:
    """The clip's parameters: its emotion's profile at its intensity, plus actor style and per-clip jitter.

    The clip's random stream is (seed, actor, emotion, intensity, statement, repetition): any subset of clips
    gives the same parameters as the full set.
    """
    style = actor_style(seed, clip.actor)
    rng = np.random.default_rng(
        _seed_sequence(seed, clip.actor, clip.emotion, clip.intensity, clip.statement, clip.repetition)
    )
    prof, neutral = EMOTIONS[clip.emotion], EMOTIONS[1]
    k = STRONG_GAIN if clip.intensity == 2 else 1.0

    def emo(field: str) -> float:
        return _intensify(getattr(neutral, field), getattr(prof, field), k)

    # Prosody: emotion (at its intensity) + actor offset + clip jitter.
    f0_hz = style.f0_hz * 2 ** ((emo("f0_shift_st") + rng.normal(0, 0.8)) / 12)
    rate = emo("rate") * style.rate_factor * rng.uniform(0.92, 1.08)
    stress = np.array([s for _, _, s in STATEMENTS[clip.statement]])
    syllable_s = stress / stress.mean() / rate * rng.uniform(0.85, 1.15, len(stress))
    syllable_s[-1] *= 1.2  # phrase-final lengthening
    speech_s = float(syllable_s.sum())
    # Duration: speech plus pauses, within RAVDESS's range; speech centred with a little jitter.
    duration_s = float(np.clip(speech_s + rng.uniform(1.2, 2.9), MIN_DURATION_S, MAX_DURATION_S))
    if speech_s > duration_s - 0.5:  # only for very slow speech: squeeze it into the clip
        syllable_s *= (duration_s - 0.5) / speech_s
        speech_s = float(syllable_s.sum())
    n_frames = max(paper.N_FRAMES, round(duration_s * paper.FPS))
    slack = n_frames / paper.FPS - speech_s
    onset = slack / 2 + rng.uniform(-0.2, 0.2) * min(1.0, slack / 2)
    # Face: emotion deviation from neutral scaled by intensity and actor expressiveness, plus identity/jitter.
    gain = k * style.expressiveness
    aus = np.zeros(len(AUS))
    for name in AUS:
        target, base = prof.aus.get(name, 0.0), neutral.aus.get(name, 0.0)
        aus[_AU[name]] = base + gain * (target - base)
    aus += np.asarray(style.au_offset) + rng.normal(0, 0.08, len(AUS)) * (aus != 0)
    aus = _invertible(aus, np.asarray(style.au_offset))
    motion = style.motion_gain * rng.uniform(0.8, 1.25)
    return ClipParams(
        clip=clip,
        style=style,
        seed=int(rng.integers(2**31)),
        n_frames=n_frames,
        duration_s=duration_s,
        speech_onset_s=float(onset),
        syllable_s=tuple(float(s) for s in syllable_s),
        f0_hz=float(f0_hz),
        f0_range_st=float(max(0.3, emo("f0_range_st") * rng.uniform(0.8, 1.2))),
        f0_slope_st=float(emo("f0_slope_st") + rng.normal(0, 0.7)),
        level_db=float(emo("level_db") + style.level_db + rng.normal(0, 1.0)),
        tilt=float(emo("tilt") + style.tilt + rng.normal(0, 0.1)),
        breath=float(max(0.0, emo("breath") + style.breath + rng.normal(0, 0.03))),
        tremor=float(max(0.0, emo("tremor") * rng.uniform(0.8, 1.2))),
        jitter=float(emo("jitter") * rng.uniform(0.8, 1.2)),
        aus=tuple(float(a) for a in aus),
        jaw_gain=float(emo("jaw_gain") * rng.uniform(0.85, 1.15)),
        pitch_deg=float(gain * prof.pitch_deg + rng.normal(0, 1.0)),
        yaw_deg=float(gain * prof.yaw_deg * rng.choice([-1, 1]) + rng.normal(0, 1.5)),
        roll_deg=float(gain * prof.roll_deg * rng.choice([-1, 1]) + rng.normal(0, 1.0)),
        nod_deg=float(motion * emo("nod_deg")),
        shake_deg=float(motion * emo("shake_deg")),
        sway_deg=float(motion * emo("sway_deg")),
        head_hz=float(emo("head_hz") * rng.uniform(0.85, 1.15)),
        lean=float(gain * prof.lean),
        blink_rate_hz=float(rng.uniform(0.2, 0.45) * (1.6 if clip.emotion == 6 else 1.0)),
    )


# ---------------------------------------------------------------------------------------------------------
# Audio


@dataclass(frozen=True)
class Speech:
    """Synthesised audio of one clip."""

    audio: np.ndarray  # (2, n_samples) float32 in [-1, 1], left/right
    envelope: np.ndarray  # (n_frames,) voicing amplitude per video frame, max 1: drives the lip sync
    f0_mean_hz: float  # mean F0 over the voiced samples


def _resonator(freq: float, bandwidth: float, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Two-pole resonator (Klatt 1980) with unit gain at 0 Hz."""
    r = np.exp(-np.pi * bandwidth / sr)
    a = np.array([1.0, -2 * r * np.cos(2 * np.pi * freq / sr), r * r])
    return np.array([a.sum()]), a


@cache
def _bandpass(centre: float, width: float, sr: int) -> np.ndarray:
    """Second-order Butterworth band-pass (second-order sections) around `centre`."""
    return signal.butter(2, [centre - width / 2, centre + width / 2], btype="bandpass", fs=sr, output="sos")


def _smooth_noise(rng: np.random.Generator, n: int, step: int) -> np.ndarray:
    """Unit-variance noise held every `step` samples and linearly interpolated (slow random drift)."""
    knots = rng.standard_normal(n // step + 2)
    return np.interp(np.arange(n) / step, np.arange(len(knots)), knots)


def synthesize_speech(params: ClipParams) -> Speech:
    """Source-filter speech of the clip's statement with the clip's prosody, padded with room noise."""
    sr, n = paper.SAMPLE_RATE, params.n_samples
    rng = np.random.default_rng([params.seed, 1])
    t = np.arange(n) / sr
    syllables = STATEMENTS[params.clip.statement]
    durations = np.asarray(params.syllable_s)
    starts = params.speech_onset_s + np.concatenate([[0.0], np.cumsum(durations[:-1])])
    speech_s = float(durations.sum())

    # F0 contour (semitones around the mean): declination/rise, accents on stressed syllables, drift, tremor.
    progress = np.clip((t - params.speech_onset_s) / speech_s, 0.0, 1.0)
    semitones = params.f0_slope_st * (progress - 0.5)
    for (_, _, stress), start, dur in zip(syllables, starts, durations, strict=True):
        height = params.f0_range_st * (stress - 0.6) * rng.uniform(0.7, 1.3)
        semitones += height * np.exp(-0.5 * ((t - start - 0.5 * dur) / (0.35 * dur)) ** 2)
    semitones += 0.3 * _smooth_noise(rng, n, sr // 10)
    tremor_hz = rng.uniform(5.0, 7.0)
    tremor = params.tremor * np.sin(2 * np.pi * tremor_hz * t + rng.uniform(0, 2 * np.pi))
    semitones += 0.8 * tremor
    f0 = params.f0_hz * 2 ** (semitones / 12) * (1 + params.jitter * _smooth_noise(rng, n, sr // 200))

    # Voicing envelope: per syllable a consonant gap, then a vowel with raised-cosine attack and release.
    voicing = np.zeros(n)
    vowel_spans = []
    for (consonant, _, stress), start, dur in zip(syllables, starts, durations, strict=True):
        c_dur = min(CONSONANTS[consonant][2] if consonant else 0.0, 0.35 * dur)
        i0, i1 = int((start + c_dur) * sr), int((start + dur) * sr)
        m = i1 - i0
        attack, release = min(int(0.025 * sr), m // 3), min(int(0.045 * sr), m // 3)
        env = np.ones(m)
        env[:attack] = 0.5 - 0.5 * np.cos(np.pi * np.arange(attack) / attack)
        env[m - release :] = 0.5 + 0.5 * np.cos(np.pi * np.arange(release) / release)
        voicing[i0:i1] = env * (0.6 + 0.4 * stress) * rng.uniform(0.85, 1.15)
        vowel_spans.append((i0, i1))
    voicing *= 1 + 0.35 * params.tremor * np.sin(2 * np.pi * tremor_hz * t)
    voicing *= 1 - 0.25 * progress  # loudness declines over the utterance

    # Source: a pulse per glottal cycle, low-passed twice at the tilt corner (glottal spectrum), + breath,
    # gated by the voicing envelope (after the filters, so that every syllable starts and ends at zero).
    phase = np.cumsum(f0 / sr)
    pulses = np.zeros(n)
    cycles = np.flatnonzero(np.diff(np.floor(phase)) > 0) + 1
    pulses[cycles] = 1 + 0.08 * rng.standard_normal(len(cycles))  # shimmer
    corner = 300.0 * 2 ** (1.2 * params.tilt)
    pole = np.exp(-2 * np.pi * corner / sr)
    source = signal.lfilter([(1 - pole) ** 2], [1.0, -2 * pole, pole * pole], pulses)
    source /= np.std(source) + 1e-12
    pulsed = 0.6 + 0.4 * np.cos(2 * np.pi * phase)  # aspiration is louder in the open phase
    source = voicing * (source + params.breath * 2.0 * pulsed * rng.standard_normal(n))

    # Vocal tract: three vowel formants per syllable plus two fixed higher ones, then lip radiation.
    scale = params.style.formant_scale
    voiced = np.zeros(n)
    tail = int(0.03 * sr)
    for (_, vowel, _), (i0, i1) in zip(syllables, vowel_spans, strict=True):
        freqs = np.asarray(VOWELS[vowel]) * scale * rng.uniform(0.96, 1.04, 3)
        freqs = [*freqs, 3500.0 * scale, 4500.0 * scale]
        widths = [90.0, 110.0, 170.0, 250.0, 300.0]
        seg = source[i0 : min(n, i1 + tail)].copy()
        seg[i1 - i0 :] = 0.0
        for freq, width in zip(freqs, widths, strict=True):
            seg = signal.lfilter(*_resonator(freq, width * (1 + 2 * params.breath), sr), seg)
        voiced[i0 : i0 + len(seg)] += seg
    voiced = signal.lfilter([1.0, -0.97], [1.0], voiced)

    # Consonants: band-passed noise bursts, brighter and stronger in tense voices.
    speech = voiced / (np.sqrt(np.mean(voiced[voicing > 0.3] ** 2)) + 1e-12)
    for (consonant, _, _), start in zip(syllables, starts, strict=True):
        if not consonant:
            continue
        centre, width, c_dur, level = CONSONANTS[consonant]
        i0, m = int(start * sr), int(c_dur * sr)
        envelope = np.exp(-np.arange(m) / (0.3 * m))
        envelope[: int(0.003 * sr)] *= np.linspace(0, 1, int(0.003 * sr))
        burst = np.concatenate([rng.standard_normal(m) * envelope, np.zeros(tail)])  # room to ring out
        burst = signal.sosfilt(_bandpass(centre, width, sr), burst)
        burst *= level * 10 ** (3 * params.tilt / 20) / (np.sqrt(np.mean(burst[:m] ** 2)) + 1e-12)
        speech[i0 : i0 + len(burst)] += burst[: n - i0]
    speech *= _SPEECH_RMS * 10 ** (params.level_db / 20)

    # Stereo: a small gain difference and independent room noise per channel; soft limit above 0.8.
    gains = 10 ** (np.array([params.style.stereo_db, -params.style.stereo_db]) / 40)
    noise = signal.lfilter([0.3], [1.0, -0.7], rng.standard_normal((2, n)), axis=-1)
    audio = gains[:, None] * speech[None, :] + _NOISE_RMS / np.std(noise) * noise
    over = np.abs(audio) > 0.8
    audio[over] = np.sign(audio[over]) * (0.8 + 0.19 * np.tanh((np.abs(audio[over]) - 0.8) / 0.19))

    frames = voicing.reshape(params.n_frames, paper.SAMPLES_PER_FRAME).mean(axis=1)
    voiced_mask = voicing > 0.05
    return Speech(
        audio=audio.astype(np.float32),
        envelope=frames / frames.max(),
        f0_mean_hz=float(np.mean(f0[voiced_mask])),
    )


# ---------------------------------------------------------------------------------------------------------
# Face

# 68 iBUG/OpenFace landmarks on skimage.data.astronaut() (512x512), (x, y) in pixels, placed by hand:
# jaw 0-16 (the subject's right, image left, to the chin to the left), brows 17-26, nose 27-35, eyes 36-47,
# outer lips 48-59, inner lips 60-67.
ASTRONAUT_LANDMARKS = np.array([
    (181.0, 104.0), (181.5, 114.0), (182.5, 124.0), (184.5, 134.0), (187.0, 144.0), (191.0, 153.0),
    (198.0, 162.0), (208.0, 170.0), (222.0, 176.0), (236.0, 173.0), (247.0, 167.0), (255.0, 159.0),
    (260.5, 150.0), (265.0, 140.0), (268.0, 130.0), (270.0, 119.0), (270.5, 108.0),
    (191.25, 94.4), (196.25, 91.0), (201.9, 89.4), (207.5, 89.75), (213.1, 91.5),
    (235.0, 92.5), (240.6, 90.6), (246.9, 90.0), (253.1, 91.0), (258.1, 93.75),
    (223.75, 101.25), (223.75, 108.75), (223.1, 116.25), (222.5, 126.25),
    (215.0, 130.0), (218.75, 131.5), (223.1, 132.5), (227.5, 131.5), (231.9, 129.75),
    (195.0, 100.6), (200.6, 98.75), (206.9, 98.75), (211.25, 102.5), (206.9, 104.0), (200.6, 103.75),
    (236.25, 104.4), (241.25, 101.5), (248.1, 101.25), (255.0, 103.1), (248.75, 105.6), (241.9, 106.0),
    (203.1, 139.75), (210.0, 139.0), (216.9, 138.25), (222.5, 138.5), (228.1, 138.25), (236.25, 138.75),
    (244.4, 141.0), (238.3, 148.6), (230.7, 152.6), (222.6, 154.0), (215.4, 152.1), (210.0, 149.7),
    (204.4, 140.25), (212.5, 142.9), (222.5, 143.4), (232.5, 142.9), (243.1, 141.25), (232.5, 148.1),
    (222.5, 149.75), (212.5, 148.1),
])  # fmt: skip
FACE_BOX = (146, 8, 306, 200)  # x0, y0, x1, y1 of the photograph region the face is cut from
# The photograph point (below the nose root) placed at the head position, in the middle of the 1280 width.
_ANCHOR = np.array([223.0, 112.0])
_HEAD_Y = 300.0  # output row of _ANCHOR before the actor's offset
_EXPRESSION_BOX = (160, 64, 292, 200)  # the displacement fields are tapered to zero at this box's border
_HEAD_DEPTH = 50.0  # photograph pixels from the face plane to the head's rotation centre (for pitch/yaw)

# Displacement bumps per AU, in photograph pixels: (AU, centre x, centre y, sigma x, sigma y, dx, dy).
# A pixel at u samples the photograph at u - D(u), so features move by about +D.
_AU_BUMPS: tuple[tuple[str, float, float, float, float, float, float], ...] = (
    ("smile", 203.0, 140.0, 6.5, 6.0, -1.5, -3.5),
    ("smile", 244.4, 141.0, 6.5, 6.0, 1.5, -3.5),
    ("smile", 206.0, 128.0, 8.0, 6.0, 0.0, -1.0),
    ("smile", 241.0, 129.0, 8.0, 6.0, 0.0, -1.0),
    ("lip_stretch", 203.0, 141.0, 5.5, 6.0, -2.5, 0.6),
    ("lip_stretch", 244.4, 142.0, 5.5, 6.0, 2.5, 0.6),
    ("upper_lip", 222.5, 137.5, 11.0, 4.0, 0.0, -2.0),
    ("upper_lip", 215.0, 132.0, 5.0, 4.0, 0.0, -1.0),
    ("upper_lip", 231.0, 132.0, 5.0, 4.0, 0.0, -1.0),
    ("brow_raise", 202.0, 88.0, 10.0, 7.0, 0.0, -3.2),
    ("brow_raise", 246.5, 88.5, 10.0, 7.0, 0.0, -3.2),
    ("brow_lower", 210.0, 92.0, 6.5, 5.0, 1.8, 2.5),
    ("brow_lower", 237.5, 93.0, 6.5, 5.0, -1.8, 2.5),
    ("brow_lower", 223.5, 96.0, 5.0, 5.0, 0.0, 1.0),
    ("inner_brow", 209.0, 91.0, 6.5, 5.0, 0.0, -3.0),
    ("inner_brow", 238.0, 92.0, 6.5, 5.0, 0.0, -3.0),
    ("eye_open", 203.0, 98.0, 6.5, 3.0, 0.0, -1.3),
    ("eye_open", 245.5, 100.5, 6.5, 3.0, 0.0, -1.3),
    ("eye_open", 203.0, 104.5, 6.5, 2.5, 0.0, 0.6),
    ("eye_open", 245.5, 106.5, 6.5, 2.5, 0.0, 0.6),
    ("blink", 203.0, 97.0, 7.0, 4.5, 0.0, 1.3),
    ("blink", 245.5, 99.5, 7.0, 4.5, 0.0, 1.3),
    ("blink", 203.0, 105.5, 7.0, 3.0, 0.0, -0.5),
    ("blink", 245.5, 107.5, 7.0, 3.0, 0.0, -0.5),
    ("cheek", 201.0, 120.0, 9.0, 7.0, 0.0, -2.0),
    ("cheek", 246.0, 122.0, 9.0, 7.0, 0.0, -2.0),
    ("cheek", 203.0, 105.0, 6.5, 2.5, 0.0, -0.6),
    ("cheek", 245.5, 107.0, 6.5, 2.5, 0.0, -0.6),
    ("nose_wrinkle", 216.0, 124.0, 4.0, 5.0, 0.5, -1.8),
    ("nose_wrinkle", 230.5, 124.0, 4.0, 5.0, -0.5, -1.8),
)
# Jaw: the lower lip, chin and jaw move down below a soft step between the lips (opening: a wide step, so
# the stretch stays invertible; closing: a sharp one, compression is always invertible).
_JAW = {"jaw_open": (146.0, 6.0, 6.5), "lips_close": (144.0, 2.0, -7.0)}  # step centre y, width, dy
MAX_JAW_OPEN = 1.2  # keeps the opening stretch invertible
BLINK = 2.6  # blink activation that shuts the eyes
_JAW_X, _JAW_SX, _CHIN_Y, _CHIN_SY = 222.0, 26.0, 178.0, 14.0


def au_displacement(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Displacement per unit activation of every AU at photograph coordinates (x, y): (n_au, 2, *x.shape).

    The one definition used both for the pixels (on a grid) and for the landmarks (at points), so both move
    identically. Each field is tapered to zero at the border of _EXPRESSION_BOX.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    out = np.zeros((len(AUS), 2, *x.shape))
    for name, cx, cy, sx, sy, dx, dy in _AU_BUMPS:
        g = np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))
        out[_AU[name], 0] += dx * g
        out[_AU[name], 1] += dy * g
    window = np.exp(-0.5 * ((x - _JAW_X) / _JAW_SX) ** 2) * np.exp(
        -0.5 * (np.maximum(y - _CHIN_Y, 0.0) / _CHIN_SY) ** 2
    )
    for name, (cy, width, dy) in _JAW.items():
        out[_AU[name], 1] += dy * window * 0.5 * (1 + np.tanh((y - cy) / width))
    x0, y0, x1, y1 = _EXPRESSION_BOX
    taper = _smoothstep((x - x0) / 12) * _smoothstep((x1 - x) / 12)
    taper *= _smoothstep((y - y0) / 12) * _smoothstep((y1 - y) / 12)
    return out * taper


def min_warp_determinant(aus: Sequence[float]) -> float:
    """Smallest Jacobian determinant of the pixel warp u -> u - D(u) for AU activations `aus`.

    Positive means the warp folds nowhere (every feature stays in order and the landmark solve converges).
    """
    _, _, fields = _expression_grid()
    d = np.tensordot(np.asarray(aus, dtype=np.float64), fields.astype(np.float64), axes=1)
    (dxy, dxx), (dyy, dyx) = np.gradient(d[0]), np.gradient(d[1])
    return float(((1 - dxx) * (1 - dyy) - dxy * dyx).min())


def _expression_extremes(aus: np.ndarray) -> Iterator[np.ndarray]:
    """The activations a clip with static expression `aus` reaches: mouth closed/wide open, eyes open/shut."""
    for jaw_open, lips_close in ((aus[_AU["jaw_open"]], 1.0), (MAX_JAW_OPEN, 0.0)):
        for blink in (0.0, BLINK):
            extreme = aus.copy()
            extreme[[_AU["jaw_open"], _AU["lips_close"], _AU["blink"]]] = jaw_open, lips_close, blink
            yield extreme


def _invertible(aus: np.ndarray, rest: np.ndarray, margin: float = 0.25) -> np.ndarray:
    """Shrink the expression `aus` towards `rest` until its extremes leave the warp `margin` from folding."""
    for shrink in np.linspace(1.0, 0.0, 11):
        candidate = rest + shrink * (aus - rest)
        if all(min_warp_determinant(a) >= margin for a in _expression_extremes(candidate)):
            return candidate
    return rest


def _smoothstep(z: np.ndarray) -> np.ndarray:
    z = np.clip(z, 0.0, 1.0)
    return z * z * (3 - 2 * z)


@dataclass(frozen=True)
class FaceTemplate:
    """A face image to animate: premultiplied RGBA (float32, 0-255) covering FACE_BOX, and its landmarks."""

    rgba: np.ndarray  # (H, W, 4), H/W = FACE_BOX size; alpha 0 at the border
    landmarks: np.ndarray  # (68, 2) in photograph coordinates


@cache
def astronaut_face() -> FaceTemplate:
    """The astronaut photograph's head (hair and face to the jaw line) cut out with a soft mask."""
    image = skdata.astronaut().astype(np.float32)
    yy, xx = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    # Face: inside the jaw line closed over the forehead; hair: non-grey pixels in an ellipse above the jaw.
    jaw = ASTRONAUT_LANDMARKS[:17]
    outline = np.concatenate([jaw, [[268.0, 80.0], [250.0, 60.0], [200.0, 60.0], [181.0, 80.0]]])
    face = np.zeros(image.shape[:2], dtype=bool)
    rows, cols = draw.polygon(outline[:, 1], outline[:, 0], face.shape)
    face[rows, cols] = True
    head = ((xx - 226) / 78) ** 2 + ((yy - 98) / 92) ** 2 <= 1
    wall = (image.max(-1) - image.min(-1) < 30) & (image.mean(-1) > 150)
    mask = face | (head & ~wall & (yy < 150))
    mask = ndimage.binary_fill_holes(
        ndimage.binary_closing(ndimage.binary_opening(mask, iterations=2), iterations=3)
    )
    labels, _ = ndimage.label(mask)
    mask = labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1
    alpha = ndimage.gaussian_filter(mask.astype(np.float32), 1.0)
    x0, y0, x1, y1 = FACE_BOX
    alpha = alpha[y0:y1, x0:x1]
    alpha[:2], alpha[-2:], alpha[:, :2], alpha[:, -2:] = 0, 0, 0, 0
    rgba = np.concatenate([image[y0:y1, x0:x1] * alpha[..., None], 255 * alpha[..., None]], axis=-1)
    return FaceTemplate(rgba=np.ascontiguousarray(rgba, dtype=np.float32), landmarks=ASTRONAUT_LANDMARKS)


@cache
def _expression_grid() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel grid of _EXPRESSION_BOX (photograph coordinates) and the AU fields on it (n_au, 2, h, w)."""
    x0, y0, x1, y1 = _EXPRESSION_BOX
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    return xx.astype(np.float32), yy.astype(np.float32), au_displacement(xx, yy).astype(np.float32)


def _bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sample (H, W, C) `image` at float pixel coordinates, clamped to the image; returns (*x.shape, C)."""
    h, w, c = image.shape
    x = np.minimum(np.maximum(x, 0.0), w - 1.001)
    y = np.minimum(np.maximum(y, 0.0), h - 1.001)
    x0, y0 = x.astype(np.int32), y.astype(np.int32)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    flat = image.reshape(-1, c)
    i = y0 * w + x0
    a, b = flat.take(i, axis=0), flat.take(i + 1, axis=0)  # take: twice as fast as fancy indexing here
    top = a + (b - a) * fx
    a, b = flat.take(i + w, axis=0), flat.take(i + w + 1, axis=0)
    return top + (a + (b - a) * fx - top) * fy


@dataclass(frozen=True)
class Motion:
    """Per-frame animation of a clip."""

    aus: np.ndarray  # (n_frames, n_au) activations
    affine: np.ndarray  # (n_frames, 2, 3): photograph (x, y, 1) -> render canvas (RENDER_SIZE) pixels
    head_deg: np.ndarray  # (n_frames, 3) pitch, yaw, roll in degrees


def clip_motion(params: ClipParams, envelope: np.ndarray) -> Motion:
    """Expression (onset ramp, lip sync from `envelope`, blinks, drift) and head motion per frame."""
    n = params.n_frames
    rng = np.random.default_rng([params.seed, 2])
    t = np.arange(n) / paper.FPS
    neutral = np.zeros(len(AUS))
    for name, value in EMOTIONS[1].aus.items():
        neutral[_AU[name]] = value
    neutral += np.asarray(params.style.au_offset)
    target = np.asarray(params.aus)
    # The expression builds up from near neutral to full by the speech onset, then holds with small drift.
    ramp = np.clip(0.3 + 0.7 * t / max(params.speech_onset_s, 0.3), 0.0, 1.0)
    aus = neutral[None, :] + ramp[:, None] * (target - neutral)[None, :]
    aus += 0.06 * np.stack([_smooth_noise(rng, n, 15) for _ in AUS], axis=1)
    # Lip sync: the mouth opens with the speech envelope and stays closed in pauses.
    env = np.convolve(np.pad(envelope, 1, mode="edge"), [0.25, 0.5, 0.25], mode="valid")
    aus[:, _AU["jaw_open"]] = np.clip(aus[:, _AU["jaw_open"]] + params.jaw_gain * env**0.7, 0.0, MAX_JAW_OPEN)
    aus[:, _AU["lips_close"]] = np.clip(1.0 - 2.0 * env, 0.0, 1.0) * (
        1 - 0.5 * aus[:, _AU["jaw_open"]].clip(0, 1)
    )
    # Blinks: 5-frame closures at random times.
    blink = np.zeros(n)
    n_blinks = rng.poisson(params.blink_rate_hz * n / paper.FPS)
    for start in rng.integers(0, max(1, n - 5), n_blinks):
        blink[start : start + 5] = np.maximum(
            blink[start : start + 5], [0.5, 1.0, 1.0, 0.6, 0.25][: n - start]
        )
    aus[:, _AU["blink"]] = BLINK * blink
    # Head: static pose + two incommensurate oscillations per axis + a small nod on speech emphasis.
    pose = np.zeros((n, 3))
    statics = (params.pitch_deg, params.yaw_deg, params.roll_deg)
    amplitudes = (params.nod_deg, params.shake_deg, params.sway_deg)
    for axis in range(3):
        f1, f2 = params.head_hz * rng.uniform(0.8, 1.2), params.head_hz * rng.uniform(1.7, 2.6)
        p1, p2 = rng.uniform(0, 2 * np.pi, 2)
        wave = np.sin(2 * np.pi * f1 * t + p1) + 0.4 * np.sin(2 * np.pi * f2 * t + p2)
        pose[:, axis] = ramp * statics[axis] + amplitudes[axis] * wave / 1.4
    pose[:, 0] += 1.5 * params.jaw_gain * env
    lean = 1.0 + params.lean * ramp + 0.01 * _smooth_noise(rng, n, 20)
    # Affine: scale about _ANCHOR, foreshorten by yaw/pitch, rotate by roll, shift by the head's rotation.
    pitch, yaw, roll = np.deg2rad(pose).T
    scale = params.style.face_scale / RENDER_FACTOR * lean
    sx, sy = scale * np.cos(yaw), scale * np.cos(pitch)
    cos_r, sin_r = np.cos(roll), np.sin(roll)
    linear = np.stack([np.stack([cos_r * sx, -sin_r * sy], -1), np.stack([sin_r * sx, cos_r * sy], -1)], -2)
    centre = np.array([paper.VIDEO_SIZE[0] / 2, _HEAD_Y]) + np.asarray(params.style.face_offset)
    shift = (centre - 0.5) / RENDER_FACTOR  # output pixel x <-> render pixel (x - 0.5) / 2
    shift = shift[None, :] + scale[:, None] * _HEAD_DEPTH * np.stack([np.sin(yaw), np.sin(pitch)], -1)
    offset = shift - np.einsum("nij,j->ni", linear, _ANCHOR)
    return Motion(aus=aus, affine=np.concatenate([linear, offset[:, :, None]], -1), head_deg=pose)


def motion_landmarks(motion: Motion, landmarks: np.ndarray = ASTRONAUT_LANDMARKS) -> np.ndarray:
    """Landmarks (68, 2) of the photograph moved like the pixels: (n_frames, 68, 2) in output (1280x720) pixels.

    A rendered pixel u shows the photograph at u - D(u); a landmark L therefore appears where u - D(u) = L.
    That map is invertible (see min_warp_determinant), so Newton's method (with step halving) finds u, then
    the head affine maps it onto the frame.
    """

    def residual(u: np.ndarray) -> np.ndarray:  # u - D(u) - L, (n_frames, n_points, 2)
        return u - np.einsum("na,aknp->npk", motion.aus, au_displacement(u[..., 0], u[..., 1])) - landmarks

    u = np.broadcast_to(landmarks, (len(motion.aus), *landmarks.shape)).astype(np.float64)
    r = residual(u)
    h = 1e-5
    for _ in range(50):
        if np.abs(r).max() < 1e-7:
            break
        # Jacobian by forward differences: columns d/dx, d/dy; solve the 2x2 systems J step = r.
        jx = (residual(u + np.array([h, 0.0])) - r) / h
        jy = (residual(u + np.array([0.0, h])) - r) / h
        det = jx[..., 0] * jy[..., 1] - jy[..., 0] * jx[..., 1]
        step = np.stack(
            [
                jy[..., 1] * r[..., 0] - jy[..., 0] * r[..., 1],
                jx[..., 0] * r[..., 1] - jx[..., 1] * r[..., 0],
            ],
            -1,
        )
        step /= det[..., None]
        scale = np.ones(det.shape)
        for _ in range(8):  # halve the step where it would increase the residual
            trial = u - scale[..., None] * step
            r_trial = residual(trial)
            worse = np.abs(r_trial).max(-1) > np.abs(r).max(-1)
            if not worse.any():
                break
            scale[worse] /= 2
        u, r = trial, r_trial
    else:
        raise RuntimeError(f"landmark warp did not converge (residual {np.abs(r).max():.2g} px)")
    canvas = np.einsum("nij,npj->npi", motion.affine[:, :, :2], u) + motion.affine[:, None, :, 2]
    return RENDER_FACTOR * canvas + 0.5 * (RENDER_FACTOR - 1)


@cache
def _background(style: ActorStyle) -> np.ndarray:
    """The static part of an actor's frames (RENDER_SIZE): plain wall with a soft gradient, neck and torso."""
    w, h = RENDER_SIZE
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    wall = np.asarray(style.background, dtype=np.float32)
    image = wall * (1.02 - 0.06 * yy[..., None] / h)
    cx = (paper.VIDEO_SIZE[0] / 2 + style.face_offset[0]) / RENDER_FACTOR
    chin = (_HEAD_Y + style.face_offset[1] + (ASTRONAUT_LANDMARKS[8, 1] - _ANCHOR[1]) * style.face_scale) / 2
    s = style.face_scale / RENDER_FACTOR
    neck = ((xx - cx) / (25 * s)) ** 2 + ((yy - chin - 10 * s) / (50 * s)) ** 2
    torso = np.abs((xx - cx) / (190 * s)) ** 3 + ((yy - chin - 150 * s) / (110 * s)) ** 2
    cloth = np.clip((1 - np.minimum(neck, torso)) * 60, 0, 1)[..., None]  # soft edge of about a pixel
    image = image * (1 - cloth) + np.asarray(style.clothes, dtype=np.float32) * cloth
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def _tinted(face: FaceTemplate, tint: tuple[float, float, float]) -> np.ndarray:
    rgba = face.rgba.copy()
    rgba[..., :3] = np.minimum(rgba[..., :3] * np.asarray(tint, dtype=np.float32), rgba[..., 3:])
    return rgba


def render_frames(
    params: ClipParams, motion: Motion, face: FaceTemplate | None = None
) -> Iterator[np.ndarray]:
    """The clip's frames, (360, 640, 3) uint8 RGB at RENDER_SIZE, one per motion step (a generator).

    Per frame: warp the face by the AU displacement field (only inside _EXPRESSION_BOX), map it by the head
    affine onto the actor's background (only the head's bounding box is touched), blend with its alpha.
    """
    face = face or astronaut_face()
    template = _tinted(face, params.style.tint)
    background = _background(params.style)
    gx, gy, fields = _expression_grid()
    bx0, by0, bx1, by1 = _EXPRESSION_BOX
    fx0, fy0, fx1, fy1 = FACE_BOX
    corners = np.array([[fx0, fy0], [fx1, fy0], [fx0, fy1], [fx1, fy1]], dtype=np.float64)
    height, width = background.shape[:2]
    for aus, affine in zip(motion.aus.astype(np.float32), motion.affine, strict=True):
        warped = template.copy()
        d = np.tensordot(aus, fields, axes=1)  # (2, h, w)
        warped[by0 - fy0 : by1 - fy0, bx0 - fx0 : bx1 - fx0] = _bilinear(
            template, gx - d[0] - fx0, gy - d[1] - fy0
        )
        # Canvas region covered by the face box, and its pixels mapped back to photograph coordinates.
        box = corners @ affine[:, :2].T + affine[:, 2]
        x0, y0 = np.maximum(np.floor(box.min(0)).astype(int), 0)
        x1, y1 = np.minimum(np.ceil(box.max(0)).astype(int) + 1, (width, height))
        inverse = np.linalg.inv(affine[:, :2])
        px = np.arange(x0, x1, dtype=np.float64) - affine[0, 2]
        py = np.arange(y0, y1, dtype=np.float64) - affine[1, 2]
        ux = (inverse[0, 0] * px[None, :] + inverse[0, 1] * py[:, None] - fx0).astype(np.float32)
        uy = (inverse[1, 0] * px[None, :] + inverse[1, 1] * py[:, None] - fy0).astype(np.float32)
        head = _bilinear(warped, ux, uy)
        frame = background.copy()
        region = frame[y0:y1, x0:x1].astype(np.float32)
        region = region * (1 - head[..., 3:] / 255) + head[..., :3]
        frame[y0:y1, x0:x1] = np.clip(region + 0.5, 0, 255).astype(np.uint8)
        yield frame


@dataclass(frozen=True)
class RenderedClip:
    """Frames (lazy) and ground-truth landmarks of one clip."""

    frames: Iterator[np.ndarray]  # (360, 640, 3) uint8 each, see render_frames
    landmarks: np.ndarray  # (n_frames, 68, 2) float, (x, y) in output 1280x720 pixels
    motion: Motion


def render_clip(params: ClipParams, envelope: np.ndarray, face: FaceTemplate | None = None) -> RenderedClip:
    """Animate the face for a clip whose speech has the per-frame `envelope` (Speech.envelope)."""
    motion = clip_motion(params, envelope)
    landmarks = motion_landmarks(motion, (face or astronaut_face()).landmarks)
    return RenderedClip(frames=render_frames(params, motion, face), landmarks=landmarks, motion=motion)


# ---------------------------------------------------------------------------------------------------------
# Encoding and archives


def encode_clip(frames: Iterable[np.ndarray], audio: np.ndarray | None) -> bytes:
    """An MP4 (H.264 yuv420p 1280x720 at 30 fps, + AAC 48 kHz stereo when `audio` (2, n) is given).

    Frames smaller than VIDEO_SIZE (e.g. RENDER_SIZE) are scaled up bilinearly by swscale. Encoders run with
    fixed options on one thread and the muxer in bitexact mode, so equal inputs give equal bytes.
    """
    width, height = paper.VIDEO_SIZE
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        container.flags |= _BITEXACT_FORMAT
        video = container.add_stream("libx264", rate=paper.FPS, options=dict(X264_OPTIONS))
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.thread_count = 1
        video.codec_context.flags |= _BITEXACT_CODEC
        if audio is not None:
            sound = container.add_stream(
                "aac", rate=paper.SAMPLE_RATE, layout="stereo", options=dict(AAC_OPTIONS)
            )
            sound.bit_rate = AAC_BIT_RATE
            sound.codec_context.thread_count = 1
            sound.codec_context.flags |= _BITEXACT_CODEC
        samples = None if audio is None else np.ascontiguousarray(audio, dtype=np.float32)
        step = 1024  # AAC frame
        sent = 0  # audio samples encoded so far: keep audio in step with video for the interleaving
        n_frames = 0
        scaler = VideoReformatter()  # one swscale context for all frames
        for i, rgb in enumerate(frames):
            n_frames += 1
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame = scaler.reformat(
                frame, width=width, height=height, format="yuv420p", interpolation="BILINEAR"
            )
            frame.pts = i
            container.mux(video.encode(frame))
            while samples is not None and sent < min((i + 1) * paper.SAMPLES_PER_FRAME, samples.shape[1]):
                chunk = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(samples[:, sent : sent + step]), format="fltp", layout="stereo"
                )
                chunk.sample_rate, chunk.pts = paper.SAMPLE_RATE, sent
                container.mux(sound.encode(chunk))
                sent += chunk.samples
        container.mux(video.encode(None))
        if samples is not None:
            if sent < samples.shape[1]:
                raise ValueError(
                    f"audio ({samples.shape[1]} samples) is longer than the video ({n_frames} frames)"
                )
            container.mux(sound.encode(None))
    return buffer.getvalue()


def strip_audio(mp4: bytes) -> bytes:
    """The video-only copy of an MP4: its video packets remuxed unchanged (no re-encoding), audio dropped."""
    buffer = io.BytesIO()
    with av.open(io.BytesIO(mp4), "r") as source, av.open(buffer, "w", format="mp4") as container:
        container.flags |= _BITEXACT_FORMAT
        src = source.streams.video[0]
        dst = container.add_stream_from_template(src)
        for packet in source.demux(src):
            if packet.dts is None:  # the demuxer's end-of-stream marker
                continue
            packet.stream = dst
            container.mux(packet)
    return buffer.getvalue()


@dataclass(frozen=True)
class ActorResult:
    """What generating one actor produced, besides its archive."""

    archive: Path
    clips: list[dict]  # one ground-truth row per AV clip (CLIPS_FILE)
    landmarks_gz: bytes  # the actor's rows of LANDMARKS_FILE, one gzip member (members concatenate)


@contextlib.contextmanager
def _atomic_write(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _zip_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
    info.compress_type = zipfile.ZIP_STORED  # mp4 does not compress further
    info.create_system = 3  # unix, whatever the host
    info.external_attr = 0o644 << 16
    return info


def _clip_row(params: ClipParams, speech: Speech, motion: Motion) -> dict:
    clip, style = params.clip, params.style
    row = {
        "clip": clip.name(),
        "actor": clip.actor,
        "sex": style.sex,
        "emotion": clip.emotion,
        "emotion_name": paper.EMOTION_CODES[clip.emotion],
        "intensity": clip.intensity,
        "statement": clip.statement,
        "repetition": clip.repetition,
        "n_frames": params.n_frames,
        "duration_s": round(params.n_frames / paper.FPS, 4),
        "drawn_duration_s": round(params.duration_s, 4),
        "n_samples": params.n_samples,
        "speech_onset_s": round(params.speech_onset_s, 4),
        "speech_offset_s": round(params.speech_onset_s + sum(params.syllable_s), 4),
        "n_syllables": len(params.syllable_s),
        "speech_rate_syl_s": round(params.speech_rate, 4),
        "f0_base_hz": round(style.f0_hz, 2),
        "f0_hz": round(params.f0_hz, 2),
        "f0_mean_hz": round(speech.f0_mean_hz, 2),
        "f0_range_st": round(params.f0_range_st, 3),
        "f0_slope_st": round(params.f0_slope_st, 3),
        "level_db": round(params.level_db, 2),
        "tilt": round(params.tilt, 3),
        "breathiness": round(params.breath, 3),
        "tremor": round(params.tremor, 3),
        "jaw_gain": round(params.jaw_gain, 3),
    }
    for name, value in zip(
        ("pitch", "yaw", "roll"), (params.pitch_deg, params.yaw_deg, params.roll_deg), strict=True
    ):
        row[f"head_{name}_deg"] = round(value, 3)
    for name, value in zip(
        ("nod", "shake", "sway"), (params.nod_deg, params.shake_deg, params.sway_deg), strict=True
    ):
        row[f"head_{name}_deg"] = round(value, 3)
    row["head_hz"] = round(params.head_hz, 3)
    row["head_motion_std_deg"] = round(float(np.linalg.norm(motion.head_deg.std(axis=0))), 3)
    row["face_scale"] = round(style.face_scale, 4)
    row["face_offset_x"], row["face_offset_y"] = (round(v, 2) for v in style.face_offset)
    for name, value in zip(AUS, params.aus, strict=True):
        row[f"au_{name}"] = round(value, 3)
    return row


def _landmark_lines(name: str, landmarks: np.ndarray) -> str:
    lines = [
        f"{name},{f},{p},{x:.2f},{y:.2f}\n"
        for f, frame in enumerate(landmarks.tolist())
        for p, (x, y) in enumerate(frame)
    ]
    return "".join(lines)


def _gzip(text: str) -> bytes:
    """One deterministic gzip member (no name, no time)."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=6) as f:
        f.write(text.encode())
    return buffer.getvalue()


def write_actor_archive(
    out_dir: Path,
    actor: int,
    *,
    seed: int = 0,
    statements: Sequence[int] = (1, 2),
    repetitions: Sequence[int] = (1,),
    intensities: Sequence[int] = (1,),
    emotions: Sequence[int] = tuple(paper.EMOTION_CODES),
) -> ActorResult:
    """Generate one actor's clips into ``out_dir/Video_Speech_Actor_XX.zip`` (atomically) and its ground truth.

    The archive holds ``Actor_XX/01-01-...mp4`` (audio-video) and ``Actor_XX/02-01-...mp4`` (the same video
    packets without audio) for every clip of :func:`clips_for_actor`, in name order.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clips = clips_for_actor(
        actor, statements=statements, repetitions=repetitions, intensities=intensities, emotions=emotions
    )
    members: dict[str, bytes] = {}
    rows, landmark_text = [], []
    for clip in clips:
        params = clip_params(seed, clip)
        speech = synthesize_speech(params)
        rendered = render_clip(params, speech.envelope)
        av_mp4 = encode_clip(rendered.frames, speech.audio)
        members[clip.name(paper.MODALITY_AV)] = av_mp4
        members[clip.name(paper.MODALITY_VIDEO)] = strip_audio(av_mp4)
        rows.append(_clip_row(params, speech, rendered.motion))
        landmark_text.append(_landmark_lines(clip.name(), rendered.landmarks))
    path = out_dir / archive_name(actor)
    with _atomic_write(path) as tmp, zipfile.ZipFile(tmp, "w") as archive:
        for name in sorted(members):
            archive.writestr(_zip_info(f"Actor_{actor:02d}/{name}.mp4"), members[name])
    return ActorResult(archive=path, clips=rows, landmarks_gz=_gzip("".join(landmark_text)))


def _write_actor(job: tuple[Path, int, dict]) -> ActorResult:
    out_dir, actor, options = job
    return write_actor_archive(out_dir, actor, **options)


def generate_demo(
    out_dir: Path,
    *,
    seed: int = 0,
    actors: Sequence[int] = paper.ACTORS,
    statements: Sequence[int] = (1, 2),
    repetitions: Sequence[int] = (1,),
    intensities: Sequence[int] = (1,),
    emotions: Sequence[int] = tuple(paper.EMOTION_CODES),
    workers: int = 1,
) -> list[Path]:
    """Write the demo dataset into `out_dir`: one archive per actor, CLIPS_FILE and LANDMARKS_FILE.

    Default: all 24 actors x 8 emotions x normal intensity x both statements x first repetition = 384 AV clips
    (+ 384 video-only copies), enough for every fold and class. `workers` processes generate actors in
    parallel; the bytes do not depend on it. Each archive appears complete or not at all; the two ground-truth
    files describe the clips of this call. Returns the archive paths, in actor order.
    """
    out_dir = Path(out_dir)
    actors = sorted(set(actors))
    options = {
        "seed": seed,
        "statements": tuple(statements),
        "repetitions": tuple(repetitions),
        "intensities": tuple(intensities),
        "emotions": tuple(emotions),
    }
    selection = {k: v for k, v in options.items() if k != "seed"}
    if not actors or not any(clips_for_actor(actor, **selection) for actor in actors):  # checks arguments too
        raise ValueError("the selection of actors, emotions, intensities, statements, repetitions is empty")
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(out_dir, actor, options) for actor in actors]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            results = list(pool.map(_write_actor, jobs))
    else:
        results = [_write_actor(job) for job in jobs]
    rows = [row for result in results for row in result.clips]
    with _atomic_write(out_dir / CLIPS_FILE) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["clip"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    with _atomic_write(out_dir / LANDMARKS_FILE) as tmp, open(tmp, "wb") as f:
        f.write(_gzip("clip,frame,point,x,y\n"))
        for result in results:
            f.write(result.landmarks_gz)
    return [result.archive for result in results]


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: generate the demo dataset."""
    parser = argparse.ArgumentParser(prog="python -m avemotion.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder for the archives")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--actors", type=int, nargs="+", default=list(paper.ACTORS), help="actors 1..24")
    parser.add_argument("--statements", type=int, nargs="+", default=[1, 2], help="statements (1, 2)")
    parser.add_argument("--repetitions", type=int, nargs="+", default=[1], help="repetitions (1, 2)")
    parser.add_argument(
        "--intensities", type=int, nargs="+", default=[1], help="intensities (1 normal, 2 strong)"
    )
    parser.add_argument(
        "--emotions", type=int, nargs="+", default=list(paper.EMOTION_CODES), help="emotions 1..8"
    )
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    args = parser.parse_args(argv)
    try:
        archives = generate_demo(
            args.out,
            seed=args.seed,
            actors=args.actors,
            statements=args.statements,
            repetitions=args.repetitions,
            intensities=args.intensities,
            emotions=args.emotions,
            workers=args.workers,
        )
    except ValueError as error:
        parser.error(str(error))
    for path in archives:
        with zipfile.ZipFile(path) as archive:
            print(f"wrote {path} ({len(archive.namelist())} mp4 files, {path.stat().st_size / 1e6:.1f} MB)")
    for name in (CLIPS_FILE, LANDMARKS_FILE):
        print(f"wrote {args.out / name}")


if __name__ == "__main__":
    main()
