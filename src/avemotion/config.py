"""Configuration: schema validation, the checks a schema cannot express, and typed per-job specs.

The Snakefile validates ``config`` with ``snakemake.utils.validate`` against
``workflow/schemas/config.schema.yaml`` and then calls :func:`check_config`; the package's own entry points use
:func:`load_config`, which does both. Jobs never see the raw dict: they get a frozen dataclass
(:class:`TrainSpec`) built here, passed to ``python -m avemotion.train`` as JSON.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import jsonschema
import yaml

from avemotion import paper, registry

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
# The files every fold job writes into its job_dir (avemotion.train.write_outputs).
JOB_OUTPUTS = ("metrics.json", "predictions.csv", "history.csv", "confusion.csv", "checkpoint.pt")


class ConfigError(ValueError):
    """A config value the workflow cannot run with; the message names the key."""


def deep_update(base: dict, overlay: dict) -> dict:
    """``base`` updated recursively with ``overlay`` (a new dict), as Snakemake merges --configfile overlays."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_update(merged[key], value)
        else:
            merged[key] = value
    return merged


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def validate_schema(config: dict, schema_path: Path = SCHEMA_PATH) -> None:
    """Validate against the JSON schema; the first error becomes a ConfigError naming the key."""
    schema = yaml.safe_load(schema_path.read_text())
    validator_cls = jsonschema.validators.validator_for(schema)
    errors = sorted(validator_cls(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        raise ConfigError(f"config key '{_key_path(e)}': {e.message}")


def folds_of(config: dict) -> dict[int, tuple[int, ...]]:
    return {int(k): tuple(v) for k, v in sorted(config["folds"].items(), key=lambda kv: int(kv[0]))}


def fold_of_actor(folds: dict[int, tuple[int, ...]]) -> dict[int, int]:
    """actor -> fold; raises ConfigError when an actor is in two folds (a train/test leak)."""
    owner: dict[int, int] = {}
    for fold, actors in folds.items():
        for actor in actors:
            if actor in owner:
                raise ConfigError(
                    f"config key 'folds': actor {actor} is in fold {owner[actor]} and fold {fold}; "
                    "each actor must be tested in exactly one fold"
                )
            owner[actor] = fold
    return owner


def check_config(config: dict) -> None:
    """Checks the schema cannot express; each failure is a ConfigError naming the key."""
    folds = folds_of(config)
    owner = fold_of_actor(folds)
    missing = sorted(set(config["data"]["actors"]) - set(owner))
    if missing:
        raise ConfigError(f"config key 'folds': actors {missing} of data.actors are in no fold")
    if sorted(folds) != list(range(len(folds))):
        raise ConfigError(f"config key 'folds': fold ids must be 0..{len(folds) - 1}, got {sorted(folds)}")
    for table in ("table1", "table2"):
        for name in config["experiments"][table]:
            try:
                keys = registry.split_configuration(name)
            except KeyError as e:
                raise ConfigError(f"config key 'experiments.{table}': {e.args[0]}") from None
            if table == "table1" and len(keys) != 1:
                raise ConfigError(f"config key 'experiments.table1': {name!r} is not a single feature")
            cells = {cell for _, _, cell in paper.table2_cells()}
            if table == "table2" and name not in cells:
                raise ConfigError(
                    f"config key 'experiments.table2': {name!r} is not a cell of Table 2, so no table would "
                    f"show it; the cells are {', '.join(sorted(cells))}"
                )
            for key in keys:
                if key not in config["training"]["hyperparameters"]:
                    raise ConfigError(
                        f"config key 'experiments.{table}': {name!r} needs "
                        f"training.hyperparameters.{key}, which is not set"
                    )
    for key, per_task in config["training"]["hyperparameters"].items():
        try:
            frames = feature_frames(config, key)
        except KeyError as e:
            raise ConfigError(f"config key 'training.hyperparameters.{key}': {e.args[0]}") from None
        for task, hp in per_task.items():
            if 2 ** (hp["scales"] - 1) >= frames:
                raise ConfigError(
                    f"config key 'training.hyperparameters.{key}.{task}.scales': {hp['scales']} scales need a "
                    f"largest dilation 2^{hp['scales'] - 1} below the {frames} frames of {key}"
                )
    lms = config["features"]["lms"]
    if lms["f_max"] <= lms["f_min"] or lms["f_max"] > paper.SAMPLE_RATE / 2:
        raise ConfigError("config key 'features.lms.f_max': must lie in (f_min, 24000]")


def load_config(*paths: Path | str, overrides: dict | None = None) -> dict:
    """Load config files (later ones overlay earlier ones), validate and check them."""
    config: dict = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        config = deep_update(config, yaml.safe_load(path.read_text()) or {})
    if overrides:
        config = deep_update(config, overrides)
    validate_schema(config)
    check_config(config)
    return config


def feature_frames(config: dict, key: str) -> int:
    """Time steps TIM-Net sees for single feature ``key``: the registry's, except the ResNets' fine-tuning
    frames, which config ``patches.finetune_frames`` sets (paper: 20)."""
    feature = registry.get(key)
    return config["patches"]["finetune_frames"] if feature.source == "patches" else feature.frames


def feature_params(config: dict, key: str) -> dict:
    """The options ``python -m avemotion.features <key>`` receives: ``features.<key>``, plus the face-lost rule
    (``tracking.lost``) for features computed from the tracking contract."""
    params = dict(config["features"].get(key, {}))
    if registry.get(key).source == "tracking":
        params["lost"] = dict(config["tracking"]["lost"])
    return params


def patch_params(config: dict) -> dict:
    """The options ``python -m avemotion.patches`` receives: ``patches`` plus the face-lost rule."""
    return {**config["patches"], "lost": dict(config["tracking"]["lost"])}


def fold_jobs(config: dict) -> list[tuple[str, str, str, int]]:
    """Every fold job the tables need, as (configuration, task, target, fold): one per emotion and fold for
    each Table 1 row (binary), one per fold for each Table 2 cell (multiclass), in config order."""
    folds = sorted(folds_of(config))
    jobs = [
        (name, "binary", target, fold)
        for name in implemented_configurations(config, "table1")
        for fold in folds
        for target in paper.CLASSES
    ]
    jobs += [
        (name, "multiclass", "all", fold)
        for name in implemented_configurations(config, "table2")
        for fold in folds
    ]
    return jobs


def targets_of(task: str) -> tuple[str, ...]:
    """The targets of a task's fold jobs: every emotion one-vs-rest (binary), "all" (multiclass)."""
    return paper.CLASSES if task == "binary" else ("all",)


def training_jobs(config: dict) -> list[tuple[str, str, int]]:
    """The workflow's training jobs, as (configuration, task, fold): one process trains every target of a
    configuration, task and fold (the 8 one-vs-rest models of a binary fold share its start-up and data)."""
    return list(dict.fromkeys((name, task, fold) for name, task, _, fold in fold_jobs(config)))


def job_dir(configuration: str, task: str, target: str, fold: int | str) -> str:
    """Where a fold job writes its outputs: ``results/finetune/...`` for a pretrained backbone fine-tuned on
    its own (avemotion.finetune), ``results/train/...`` for TIM-Net on feature arrays (avemotion.train)."""
    keys = registry.split_configuration(configuration)
    stage = "finetune" if len(keys) == 1 and registry.get(keys[0]).is_backbone else "train"
    return f"results/{stage}/{configuration}/{task}/{target}/fold{fold}"


def frozen_features(config: dict) -> list[str]:
    """Backbone features whose frozen per-fold features the run builds: those fine-tuned for the 8-class
    task (a Table 2 single-feature cell), whose fold models give them."""
    return [
        name
        for name in implemented_configurations(config, "table2")
        if "+" not in name and registry.get(name).is_backbone
    ]


def implemented_configurations(config: dict, table: str) -> list[str]:
    """The configurations of ``experiments.<table>`` whose features the workflow can build, in config order."""
    return [
        name
        for name in config["experiments"][table]
        if all(registry.get(k).implemented for k in registry.split_configuration(name))
    ]


@dataclass(frozen=True)
class TrainSpec:
    """Everything one training job needs; the job's resolved config, logged to MLflow as parameters."""

    configuration: str
    task: str  # "binary" (one emotion vs rest) or "multiclass"
    target: str  # the emotion for binary, "all" for multiclass
    fold: int
    test_actors: tuple[int, ...]
    learning_rate: float
    batch_size: int
    epochs: int
    scales: int
    channels: int
    kernel_size: int
    convs_per_block: int
    dropout: float
    seed: int
    device: str
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    label_smoothing: float
    standardize: bool
    # Pretrained backbone features only: the backbones.<name> config section (fine-tuned end to end under
    # TIM-Net), and mixed precision on CUDA. None / False for TIM-Net on a precomputed feature array.
    backbone: dict | None = None
    mixed_precision: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainSpec:
        data = json.loads(text)
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ConfigError(f"training spec has unknown keys {sorted(unknown)}")
        data["test_actors"] = tuple(data["test_actors"])
        return cls(**data)

    @property
    def features(self) -> tuple[str, ...]:
        return registry.split_configuration(self.configuration)


def train_spec(config: dict, configuration: str, task: str, target: str, fold: int) -> TrainSpec:
    """The spec of the job training ``configuration`` for ``task``/``target`` on ``fold``."""
    if task not in paper.TASKS:
        raise ConfigError(f"unknown task {task!r}; expected one of {paper.TASKS}")
    if (task == "multiclass") != (target == "all") or (task == "binary" and target not in paper.CLASSES):
        raise ConfigError(f"target {target!r} does not fit task {task!r}")
    keys = registry.split_configuration(configuration)
    if len(keys) != 1:
        # Multimodal fusion (its own Table 3 entries) arrives with the fusion model.
        raise ConfigError(f"configuration {configuration!r}: multimodal fusion is not available yet")
    feature = registry.get(keys[0])
    hp = config["training"]["hyperparameters"][keys[0]][task]
    folds = folds_of(config)
    if fold not in folds:
        raise ConfigError(f"fold {fold} is not in config key 'folds' ({sorted(folds)})")
    train, model, opt = config["training"], config["model"], config["training"]["optimizer"]
    return TrainSpec(
        configuration=configuration,
        task=task,
        target=target,
        fold=fold,
        test_actors=folds[fold],
        learning_rate=float(hp["learning_rate"]),
        batch_size=int(hp["batch_size"]),
        epochs=int(hp["epochs"]),
        scales=int(hp["scales"]),
        channels=int(hp["channels"]),
        kernel_size=int(model["kernel_size"]),
        convs_per_block=int(model["convs_per_block"]),
        dropout=float(model["dropout"]),
        seed=int(train["seed"]),
        device=train["device"],
        beta1=float(opt["beta1"]),
        beta2=float(opt["beta2"]),
        eps=float(opt["eps"]),
        weight_decay=float(opt["weight_decay"]),
        label_smoothing=float(train["label_smoothing"]),
        # A backbone's inputs have their own fixed normalisation (ImageNet mean/std, per-utterance z-score).
        standardize=bool(train["standardize"]) and not feature.is_backbone,
        backbone=dict(config["backbones"][feature.backbone]) if feature.is_backbone else None,
        mixed_precision=bool(train["mixed_precision"]) and feature.is_backbone,
    )
