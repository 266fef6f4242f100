"""The one registry of features (modalities): what each is, where it comes from, its shape, its table row.

Rules, training and tables all read this registry: adding a feature is one entry here, one extractor (or a
backbone), and its hyper-parameters in config.yaml. ``implemented`` says whether the DAG can build it yet.

Two kinds of feature:

- engineered (``backbone`` None): computed once into ``results/features/<key>/features.npy`` (clips x frames x
  dims), then TIM-Net is trained on the array;
- pretrained backbone (``backbone`` = a ``backbones.<name>`` config section): for a single-feature configuration
  the backbone is fine-tuned end to end under TIM-Net per fold (``avemotion.finetune``) on ``frames`` time steps
  (20 evenly spaced patches for the ResNets, 146 Wav2Vec2 frames); each fold's fine-tuned backbone then gives
  frozen per-fold features of ``frozen_frames`` time steps (the central 88 frames for the ResNets) for fusion.
  ``streams`` names the patches a ResNet feature reads; several streams (the two eyes) are averaged per frame.
"""

from __future__ import annotations

from dataclasses import dataclass

from avemotion import paper


@dataclass(frozen=True)
class Feature:
    key: str  # config/registry key and path component, e.g. "lms"
    label: str  # how the tables name it, e.g. "LMS"
    source: str  # what it is computed from: "audio" (the central 140,800 samples), "tracking", "patches"
    dims: int  # features per time step
    frames: int  # time steps per clip
    implemented: bool  # whether the workflow can extract it yet
    backbone: str | None = None  # config section backbones.<name>; None for an engineered feature
    streams: tuple[str, ...] = ()  # patch streams (avemotion.patches.STREAMS) a ResNet feature reads
    frozen_frames: int | None = None  # time steps of its frozen per-fold features (backbone features only)

    @property
    def is_backbone(self) -> bool:
        return self.backbone is not None


FEATURES: dict[str, Feature] = {
    f.key: f
    for f in (
        Feature("lms", "LMS", "audio", 24, paper.N_FRAMES, True),
        Feature(
            "wav2vec2_base", "Wav2Vec2-B", "audio", 768, paper.WAV2VEC2_FRAMES, True,
            backbone="wav2vec2_base", frozen_frames=paper.WAV2VEC2_FRAMES,
        ),
        Feature(
            "wav2vec2_large", "Wav2Vec2-L", "audio", 1024, paper.WAV2VEC2_FRAMES, True,
            backbone="wav2vec2_large", frozen_frames=paper.WAV2VEC2_FRAMES,
        ),
        Feature(
            "face_resnet", "Face ResNet", "patches", 512, paper.FINETUNE_FRAMES, True,
            backbone="resnet", streams=("face",), frozen_frames=paper.N_FRAMES,
        ),
        Feature("face_kpd", "Face KPD", "tracking", 780, paper.N_FRAMES, True),
        Feature("face_au", "Face AU", "tracking", 35, paper.N_FRAMES, True),
        Feature(
            "eyes_resnet", "Eyes ResNet", "patches", 512, paper.FINETUNE_FRAMES, True,
            backbone="resnet", streams=("eye_left", "eye_right"), frozen_frames=paper.N_FRAMES,
        ),
        Feature("eyes_kpd", "Eyes KPD", "tracking", 179, paper.N_FRAMES, True),
        Feature(
            "mouth_resnet", "Mouth ResNet", "patches", 512, paper.FINETUNE_FRAMES, True,
            backbone="resnet", streams=("mouth",), frozen_frames=paper.N_FRAMES,
        ),
        Feature("head_pose", "Head pose RPY-3D", "tracking", 6, paper.N_FRAMES, True),
    )
}  # fmt: skip


def get(key: str) -> Feature:
    """The registry entry for ``key``; a clear error listing the known keys otherwise."""
    try:
        return FEATURES[key]
    except KeyError:
        raise KeyError(f"unknown feature {key!r}; known features: {', '.join(FEATURES)}") from None


def split_configuration(name: str) -> tuple[str, ...]:
    """Feature keys of a configuration name such as ``"face_kpd+lms"`` (each must be registered)."""
    keys = tuple(name.split("+"))
    for key in keys:
        get(key)
    return keys
