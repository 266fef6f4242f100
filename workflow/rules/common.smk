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
# What the training rules pass: relative to the project folder (their jobs run there and resolve it), so a
# project moved or copied elsewhere does not see every training job's parameters change and retrain.
JOB_MLFLOW_URI = runs.relative_uri(MLFLOW_URI, Path.cwd())
MLFLOW_INIT = (
    f"python -m avemotion.runs init --uri '{MLFLOW_URI}' "
    f"--prefix {config['mlflow']['experiment_prefix']}"
)
BACKBONE_FEATURES = [k for k, f in registry.FEATURES.items() if f.is_backbone]
# Folds per training job (config jobs.group_folds): one job per fold, its {fold} wildcard; or one job per
# configuration and task training every fold in turn, the start-up paid once (the demo).
GROUP_FOLDS = config["jobs"]["group_folds"]
JOB_FOLDS = [str(k) for k in FOLDS] if GROUP_FOLDS else ["{fold}"]
# The part of a training job's log and benchmark paths that names its folds; its runtime scales with them.
JOB_PART = "folds" if GROUP_FOLDS else "fold{fold}"
FOLDS_PER_JOB = len(JOB_FOLDS)
# TIM-Net training jobs of several configurations (config jobs.configurations_per_job > 1): each task's
# groups, one rule each (train_<task>_group<i>); the single-configuration rules then match no configuration.
TRAIN_GROUPS = {
    task: (
        avcfg.training_groups(config, task)
        if config["jobs"]["configurations_per_job"] > 1
        else []
    )
    for task in paper.TASKS
}
# Frozen per-fold features of the fine-tuned backbones: the edge into multimodal fusion, from the fold models
# of the first fine-tuning seed.
FROZEN_SEED = avcfg.frozen_seed(config)
FROZEN = expand(
    "results/features/{feature}/fold{fold}/features.npy",
    feature=avcfg.frozen_features(config),
    fold=FOLDS,
)


# The configuration wildcard's pattern, and one that matches no configuration (a rule switched off).
CONFIGURATION = r"[a-z0-9_]+(\+[a-z0-9_]+)*"
NO_CONFIGURATION = r"(?!)"


wildcard_constraints:
    actor=r"\d{2}",
    fold=r"\d",
    feature=r"[a-z0-9_]+",
    configuration=CONFIGURATION,
    task="binary|multiclass",
    seed=r"\d+",
    target="|".join((*paper.CLASSES, "all")),


def train_metrics():
    """metrics.json of every model the tables need, each fold and seed (registry, config experiments)."""
    return [f"{avcfg.job_dir(*job)}/metrics.json" for job in avcfg.fold_jobs(config)]


def job_folds(wildcards):
    """The folds a training job trains: its {fold} wildcard, or every fold when folds are grouped."""
    return FOLDS if GROUP_FOLDS else [int(wildcards.fold)]


def branch_folders(configuration, fold):
    """The feature folder of each modality of ``configuration`` in ``fold``: an engineered feature's array,
    or a backbone's frozen per-fold features (multimodal fusion: built from that fold's fine-tuned 8-class
    backbone)."""
    return [
        (
            f"results/features/{key}/fold{fold}"
            if registry.get(key).is_backbone
            else f"results/features/{key}"
        )
        for key in registry.split_configuration(configuration)
    ]


def configuration_features(wildcards, configurations=None):
    """The feature arrays TIM-Net trains on, one per modality and distinct fold folder, of the job's
    configuration (its wildcard) or of each configuration of a group."""
    folders = list(
        dict.fromkeys(
            folder
            for configuration in configurations or [wildcards.configuration]
            for fold in job_folds(wildcards)
            for folder in branch_folders(configuration, fold)
        )
    )
    return {
        "features": [f"{folder}/features.npy" for folder in folders],
        "index": [f"{folder}/index.csv" for folder in folders],
    }


def feature_args(task, name, configurations=None):
    """avemotion.train's --features (name features.npy) or --index (index.csv) values: one per modality when
    every fold of the job's one configuration reads the same arrays, else one per modality and fold job, in
    --spec order (per-fold frozen features; a group of configurations)."""

    def args(wildcards):
        names = configurations or [wildcards.configuration]
        per_fold = [
            branch_folders(configuration, fold)
            for configuration in names
            for fold in job_folds(wildcards)
        ]
        if len(names) == 1 and len({tuple(folders) for folders in per_fold}) == 1:
            return [f"{folder}/{name}" for folder in per_fold[0]]
        n_targets = len(avcfg.targets_of(task))
        return [
            f"{folder}/{name}" for folders in per_fold for folder in folders * n_targets
        ]

    return args


def fold_dirs(stage, task, configurations=("{configuration}",)):
    """The output folders of one training job (one seed, its wildcard): one per configuration (its wildcard,
    or a group's), fold (unless folds are grouped) and target of ``task``, configuration by configuration,
    fold by fold.
    """
    return [
        f"results/{stage}/{configuration}/{task}/{target}/seed{{seed}}/fold{fold}"
        for configuration in configurations
        for fold in JOB_FOLDS
        for target in avcfg.targets_of(task)
    ]


def frozen_outputs(name):
    """The frozen per-fold features (name features.npy) or index (index.csv) one extract_frozen job writes
    (wildcard feature; fold unless folds are grouped)."""
    return [f"results/features/{{feature}}/fold{fold}/{name}" for fold in JOB_FOLDS]


def frozen_checkpoints(wildcards):
    """The fine-tuned 8-class fold models an extract_frozen job encodes with, in frozen_outputs order: those
    of the first fine-tuning seed (config training.finetune_seeds)."""
    return [
        f"results/finetune/{wildcards.feature}/multiclass/all/seed{FROZEN_SEED}/fold{fold}/checkpoint.pt"
        for fold in job_folds(wildcards)
    ]


def fold_outputs(stage, task, configurations=None):
    """Every file of one training job, named "<target>_<file stem>" (angry_metrics, all_checkpoint, ...),
    with "_<fold>" appended when the job trains every fold; a group's files are not named.
    """
    if configurations is not None:
        return [
            f"{folder}/{name}"
            for folder in fold_dirs(stage, task, configurations)
            for name in avcfg.JOB_OUTPUTS
        ]
    suffix = (lambda folder: f"_{folder[-1]}") if GROUP_FOLDS else (lambda folder: "")
    return {
        f"{Path(folder).parts[-3]}_{name.split('.')[0]}{suffix(folder)}": f"{folder}/{name}"
        for folder in fold_dirs(stage, task)
        for name in avcfg.JOB_OUTPUTS
    }


def train_specs_json(task, configurations=None):
    """The TrainSpec JSON of every configuration, fold and target of a training job (its seed), in fold_dirs
    order."""

    def specs(wildcards):
        return [
            avcfg.train_spec(
                config, configuration, task, target, fold, int(wildcards.seed)
            ).to_json()
            for configuration in configurations or [wildcards.configuration]
            for fold in job_folds(wildcards)
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
