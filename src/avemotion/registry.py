"""The one registry of features (modalities): what each is, where it comes from, its shape, its table row.

Rules, training and tables all read this registry: adding a feature is one entry here, one extractor, and its
hyper-parameters in config.yaml. ``implemented`` says whether the DAG can build it yet (a later issue adds the
pretrained-backbone features).
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


FEATURES: dict[str, Feature] = {
    f.key: f
    for f in (
        Feature("lms", "LMS", "audio", 24, paper.N_FRAMES, True),
        Feature("wav2vec2_base", "Wav2Vec2-B", "audio", 768, 146, False),
        Feature("wav2vec2_large", "Wav2Vec2-L", "audio", 1024, 146, False),
        Feature("face_resnet", "Face ResNet", "patches", 512, paper.N_FRAMES, False),
        Feature("face_kpd", "Face KPD", "tracking", 780, paper.N_FRAMES, True),
        Feature("face_au", "Face AU", "tracking", 35, paper.N_FRAMES, True),
        Feature("eyes_resnet", "Eyes ResNet", "patches", 512, paper.N_FRAMES, False),
        Feature("eyes_kpd", "Eyes KPD", "tracking", 179, paper.N_FRAMES, True),
        Feature("mouth_resnet", "Mouth ResNet", "patches", 512, paper.N_FRAMES, False),
        Feature("head_pose", "Head pose RPY-3D", "tracking", 6, paper.N_FRAMES, True),
    )
}


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
