import json
from pathlib import Path

from avemotion import config as avcfg, paper, registry, runs

avcfg.check_config(config)

ACTORS = [f"{a:02d}" for a in config["data"]["actors"]]
FOLDS = sorted(avcfg.folds_of(config))
DEMO = config["data"]["demo"] is not None
ARCHIVES_DIR = "results/demo/archives" if DEMO else config["data"]["archives_dir"]
ACTOR_ARGS = " ".join(str(a) for a in config["data"]["actors"])
DEMO_ARGS = (
    " ".join(
        f"--{key} {' '.join(map(str, value)) if isinstance(value, list) else value}"
        for key, value in config["data"]["demo"].items()
    )
    + f" --actors {ACTOR_ARGS}"
    if DEMO
    else ""
)
TRACKING = config["tracking"]
TRACKING_ARCHIVE = "FacialTracking_Actors_01-24"
# What each registry feature source is computed from, per actor.
FEATURE_SOURCES = {
    "audio": "results/audio/Actor_{actor}.npz",
    "tracking": "results/tracking/Actor_{actor}",
    "patches": "results/patches/Actor_{actor}",
}
MLFLOW_URI = runs.tracking_uri(config["mlflow"]["tracking_uri"], Path.cwd())
MLFLOW_INIT = (
    f"python -m avemotion.runs init --uri '{MLFLOW_URI}' "
    f"--prefix {config['mlflow']['experiment_prefix']}"
)
BACKBONE_FEATURES = [k for k, f in registry.FEATURES.items() if f.is_backbone]
# Frozen per-fold features of the fine-tuned backbones: the edge into multimodal fusion.
FROZEN = expand(
    "results/features/{feature}/fold{fold}/features.npy",
    feature=avcfg.frozen_features(config),
    fold=FOLDS,
)


wildcard_constraints:
    actor=r"\d{2}",
    fold=r"\d",
    feature=r"[a-z0-9_]+",
    configuration=r"[a-z0-9_]+(\+[a-z0-9_]+)*",
    task="binary|multiclass",
    target="|".join((*paper.CLASSES, "all")),


def train_metrics():
    """metrics.json of every fold job the tables need (from the registry and config experiments)."""
    return [f"{avcfg.job_dir(*job)}/metrics.json" for job in avcfg.fold_jobs(config)]


def configuration_features(wildcards):
    """The feature arrays TIM-Net trains on, one per modality: an engineered feature's array, or a backbone's
    frozen per-fold features (multimodal fusion: built from that fold's fine-tuned 8-class backbone).
    """
    folders = [
        (
            f"results/features/{key}/fold{wildcards.fold}"
            if registry.get(key).is_backbone
            else f"results/features/{key}"
        )
        for key in registry.split_configuration(wildcards.configuration)
    ]
    return {
        "features": [f"{folder}/features.npy" for folder in folders],
        "index": [f"{folder}/index.csv" for folder in folders],
    }


def fold_dirs(stage, task):
    """The output folders of one training job: one per target of ``task`` (wildcards configuration, fold)."""
    return [
        f"results/{stage}/{{configuration}}/{task}/{target}/fold{{fold}}"
        for target in avcfg.targets_of(task)
    ]


def fold_outputs(stage, task):
    """Every file of one training job, named "<target>_<file stem>" (angry_metrics, all_checkpoint, ...)."""
    return {
        f"{Path(folder).parts[-2]}_{name.split('.')[0]}": f"{folder}/{name}"
        for folder in fold_dirs(stage, task)
        for name in avcfg.JOB_OUTPUTS
    }


def train_specs_json(task):
    """The TrainSpec JSON of every target of a training job, in fold_dirs order."""

    def specs(wildcards):
        return [
            avcfg.train_spec(
                config, wildcards.configuration, task, target, int(wildcards.fold)
            ).to_json()
            for target in avcfg.targets_of(task)
        ]

    return specs


def feature_inputs(wildcards):
    source = registry.get(wildcards.feature).source
    return expand(FEATURE_SOURCES[source], actor=ACTORS)


def backbone_inputs(wildcards):
    """A backbone feature's per-actor inputs, and its pretrained weights unless it is built untrained."""
    feature = registry.get(wildcards.get("configuration") or wildcards.feature)
    params = config["backbones"][feature.backbone]
    inputs = {"inputs": expand(FEATURE_SOURCES[feature.source], actor=ACTORS)}
    if params["init"] == "pretrained":
        inputs["weights"] = params["path"]
    return inputs


def tracking_inputs(wildcards):
    """What the tracking backend reads besides the clips: the release zip or the tracker's model."""
    if TRACKING["backend"] == "precomputed":
        return {
            "archive": f"results/download/{TRACKING_ARCHIVE}.zip",
            "record": f"results/download/{TRACKING_ARCHIVE}.json",
        }
    if TRACKING["backend"] == "mediapipe":
        return {"model": TRACKING["mediapipe"]["model"]}
    return {}
