"""The study's fixed facts: RAVDESS naming, class order, folds, frame/sample windows, table layouts.

Everything here is a property of the dataset or of the paper ("The Role of Facial and Speech Features in
Emotion Classification"), not a tunable: tunables live in config.yaml. The paper's published table values
are data, in ``data/paper_values.yaml`` beside this file, read through :func:`published_values`.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import yaml

# RAVDESS file names: MM-VV-EE-II-SS-RR-AA.mp4 (modality, vocal channel, emotion, intensity, statement,
# repetition, actor). Emotion codes as published with the dataset.
EMOTION_CODES: dict[int, str] = {
    1: "neutral",
    2: "calm",
    3: "happy",
    4: "sad",
    5: "angry",
    6: "fearful",
    7: "disgust",
    8: "surprised",
}
# The tables' class order (alphabetical); class index i of every model is CLASSES[i].
CLASSES: tuple[str, ...] = tuple(sorted(EMOTION_CODES.values()))
MODALITY_AV, MODALITY_VIDEO, MODALITY_AUDIO = 1, 2, 3
VOCAL_SPEECH = 1
N_ACTORS = 24
ACTORS: tuple[int, ...] = tuple(range(1, N_ACTORS + 1))
# Per actor: neutral 1 intensity x 2 statements x 2 repetitions, every other emotion 2 x 2 x 2 -> 60 clips.
CLIPS_PER_ACTOR = 60
N_CLIPS = N_ACTORS * CLIPS_PER_ACTOR  # 1440 speech AV clips

# Subject-wise 5-fold split (test actors per fold), after Luna-Jimenez et al. 2021, used by the paper.
FOLDS: dict[int, tuple[int, ...]] = {
    0: (2, 5, 14, 15, 16),
    1: (3, 6, 7, 13, 18),
    2: (10, 11, 12, 19, 20),
    3: (8, 17, 21, 23, 24),
    4: (1, 4, 9, 22),
}

# Temporal window: the central 88 video frames (the shortest clip is ~2.9 s at 30 fps) and their audio.
FPS = 30
N_FRAMES = 88
SAMPLE_RATE = 48_000
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 1600
N_SAMPLES = N_FRAMES * SAMPLES_PER_FRAME  # 140,800
VIDEO_SIZE = (1280, 720)  # width, height (the paper's "720x1080" is a typo)

# Patches for the ResNet backbones (paper, "Training Samples" and supplementary "ResNet"). Sizes are
# (height, width) in pixels of the 1280x720 frame; every patch is then resized to PATCH_SIZE x PATCH_SIZE.
FACE_CROP = (720, 720)  # centre crop of the frame ("to remove the borders")
EYE_CROP = (128, 128)  # around each eye's landmarks
MOUTH_CROP = (110, 180)  # around the mouth landmarks; "110x180": a mouth is wider than tall (ledger)
PATCH_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet normalisation, quoted by the paper
IMAGENET_STD = (0.229, 0.224, 0.225)
FINETUNE_FRAMES = 20  # "20 equally spaced samples from the full video" for fine-tuning the ResNets

# Wav2Vec2 input: the 140,800-sample window resampled to 16 kHz (46,934 samples) gives 146 frames.
WAV2VEC2_SAMPLE_RATE = 16_000
WAV2VEC2_FRAMES = 146

TASKS = ("binary", "multiclass")

# Table layouts. Table 1: one row per single-modality feature, one column per emotion (binary macro-F1).
TABLE1_ROWS: tuple[tuple[str, str, str, str], ...] = (
    # (feature key, modality, type, features label)
    ("lms", "audio", "speech", "LMS"),
    ("wav2vec2_base", "audio", "speech", "Wav2Vec2-B"),
    ("face_resnet", "video", "face", "ResNet"),
    ("face_kpd", "video", "face", "KPD"),
    ("face_au", "video", "face", "AU"),
    ("eyes_resnet", "video", "eyes", "ResNet"),
    ("eyes_kpd", "video", "eyes", "KPD"),
    ("mouth_resnet", "video", "mouth", "ResNet"),
    ("head_pose", "video", "head pose", "RPY-3D"),
)
# Table 2: rows = visual features (None = speech only), columns = speech features (None = visual only);
# each row/column entry is (label, tuple of feature keys). 8-class accuracy.
TABLE2_ROWS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("None", ()),
    ("Eyes ResNet", ("eyes_resnet",)),
    ("Eyes KPD", ("eyes_kpd",)),
    ("Mouth ResNet", ("mouth_resnet",)),
    ("Eyes + Mouth ResNets", ("eyes_resnet", "mouth_resnet")),
    ("Face ResNet", ("face_resnet",)),
    ("Face KPD", ("face_kpd",)),
    ("Face AU", ("face_au",)),
)
TABLE2_COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("None", ()),
    ("LMS", ("lms",)),
    ("Wav2Vec2-L", ("wav2vec2_large",)),
)


def configuration_name(features: tuple[str, ...] | list[str]) -> str:
    """The name of a (possibly multimodal) configuration: its feature keys joined by '+', in given order."""
    if not features:
        raise ValueError("a configuration needs at least one feature")
    return "+".join(features)


def table2_cells() -> list[tuple[str, str, str]]:
    """Every Table 2 cell as (row label, column label, configuration name); the None/None corner is empty."""
    cells = []
    for row, visual in TABLE2_ROWS:
        for column, speech in TABLE2_COLUMNS:
            if visual or speech:
                cells.append((row, column, configuration_name(visual + speech)))
    return cells


@cache
def published_values() -> dict:
    """The paper's Tables 1 and 2 as published (see data/paper_values.yaml for source and caveats)."""
    text = resources.files("avemotion").joinpath("data/paper_values.yaml").read_text()
    return yaml.safe_load(text)
