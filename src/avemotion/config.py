"""Configuration: schema validation, the checks a schema cannot express, and typed per-job specs.

The Snakefile validates ``config`` with ``snakemake.utils.validate`` against
``workflow/schemas/config.schema.yaml`` and then calls :func:`check_config`; the package's own entry points use
:func:`load_config`, which does both. Jobs never see the raw dict: they get a frozen dataclass
(:class:`TrainSpec`) built here, passed to ``python -m avemotion.train`` as JSON.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import jsonschema
import yaml

from avemotion import paper, registry

TABLE_WHAT = {"table1": "feature row of Table 1", "table2": "cell of Table 2"}
# What to do about a schema error, by the JSON Schema keyword that failed (anything else: a value out of range,
# of the wrong type or not among the allowed ones).
SCHEMA_REMEDY = {"additionalProperties": "remove that key or correct its spelling", "required": "add it"}
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
        remedy = SCHEMA_REMEDY.get(str(e.validator), "set a value the schema allows")
        raise ConfigError(
            f"config key '{_key_path(e)}': {e.message}; {remedy} ({schema_path} describes every key, its range "
            "and its default)"
        )


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
                    f"each actor must be tested in exactly one fold: remove actor {actor} from one of them"
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
        layout = table_configurations(table)
        for name in experiment_configurations(config, table):
            try:
                keys = registry.split_configuration(name)
            except KeyError as e:
                raise ConfigError(f"config key 'experiments.{table}': {e.args[0]}") from None
            if name not in layout:
                raise ConfigError(
                    f"config key 'experiments.{table}': {name!r} is not a {TABLE_WHAT[table]}, so no table "
                    f"would show it; they are {', '.join(layout)}"
                )
            needed = [
                f"training.hyperparameters.{k}"
                for k in keys
                if k not in config["training"]["hyperparameters"]
            ]
            if len(keys) > 1 and fusion_row(keys) not in config["training"]["fusion"]:
                needed.append(f"training.fusion.{fusion_row(keys)}")
            if needed:
                raise ConfigError(
                    f"config key 'experiments.{table}': {name!r} needs {', '.join(needed)}, which is not set"
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
    fusion = config["training"]["fusion"]
    for name in fusion["channels"]:
        if "+" not in name or name not in table_configurations("table2"):
            raise ConfigError(
                f"config key 'training.fusion.channels.{name}': not a multimodal cell of Table 2"
            )
    for key in fusion["branch_scales"]:
        if key not in registry.FEATURES:
            raise ConfigError(f"config key 'training.fusion.branch_scales.{key}': unknown feature")
    for name in experiment_configurations(config, "table2"):
        keys = registry.split_configuration(name)
        if len(keys) > 1:
            for branch in fusion_branches(config, name):
                key, scales = branch["feature"], branch["scales"]
                if 2 ** (scales - 1) >= branch["frames"]:
                    where = (
                        "branch_scales" if key in fusion["branch_scales"] else f"{fusion_row(keys)}.scales"
                    )
                    raise ConfigError(
                        f"config key 'training.fusion.{where}': {scales} scales for the {key} branch of "
                        f"{name} need a largest dilation 2^{scales - 1} below its {branch['frames']} frames"
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


def fusion_frames(key: str) -> int:
    """Time steps of feature ``key`` as a fusion branch: a backbone's frozen per-fold features (the central 88
    frames of patches, 146 Wav2Vec2 frames), an engineered feature's own frames."""
    feature = registry.get(key)
    return feature.frozen_frames if feature.is_backbone else feature.frames


def fusion_row(keys: tuple[str, ...] | list[str]) -> str:
    """The ``training.fusion`` entry of a multimodal configuration: its speech feature (Table 3's rows
    "multimodal with Wav2Vec2-L + ..." and "with LMS + ..."), or ``visual`` when it has none (Eyes + Mouth
    ResNets, which Table 3 does not cover)."""
    speech = [k for k in keys if registry.get(k).source == "audio"]
    if len(speech) > 1:
        raise ConfigError(f"configuration {'+'.join(keys)!r} has two speech features {speech}")
    return speech[0] if speech else "visual"


def fusion_branches(config: dict, configuration: str) -> list[dict]:
    """One TIM-Net per modality of a multimodal configuration: feature, frames, scales and channels.

    Scales: the configuration's Table 3 row (7), except a feature named in ``training.fusion.branch_scales``
    (Wav2Vec2-L's 146 frames take its own 8). Channels: the row's (64), except a configuration named in
    ``training.fusion.channels`` (LMS + Eyes KPD: 32), for every branch.
    """
    keys = registry.split_configuration(configuration)
    fusion = config["training"]["fusion"]
    hp = fusion[fusion_row(keys)]
    channels = fusion["channels"].get(configuration, hp["channels"])
    return [
        {
            "feature": key,
            "frames": fusion_frames(key),
            "scales": int(fusion["branch_scales"].get(key, hp["scales"])),
            "channels": int(channels),
        }
        for key in keys
    ]


def table_configurations(table: str) -> list[str]:
    """Every configuration of a table's layout: Table 1's feature rows, Table 2's cells (row-major)."""
    if table == "table1":
        return [key for key, *_ in paper.TABLE1_ROWS]
    return [name for _, _, name in paper.table2_cells()]


def experiment_configurations(config: dict, table: str) -> list[str]:
    """``experiments.<table>``: ``all`` = the table's whole layout (the default), or the listed subset."""
    chosen = config["experiments"][table]
    return table_configurations(table) if chosen == "all" else list(chosen)


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


def seeds_of(config: dict, configuration: str) -> list[int]:
    """The seeds a configuration trains (one model per seed, target and fold): ``training.seeds`` for TIM-Net
    on feature arrays, ``training.finetune_seeds`` for a backbone fine-tuned on its own."""
    key = "seeds" if trains_on_arrays(configuration) else "finetune_seeds"
    return [int(s) for s in config["training"][key]]


def frozen_seed(config: dict) -> int:
    """The fine-tuning seed whose fold models give the frozen features fusions read: the first one."""
    return int(config["training"]["finetune_seeds"][0])


def fold_jobs(config: dict) -> list[tuple[str, str, str, int, int]]:
    """Every model the tables need, as (configuration, task, target, fold, seed): one per emotion, fold and
    seed for each Table 1 row (binary), one per fold and seed for each Table 2 cell (multiclass), in config
    order."""
    folds = sorted(folds_of(config))
    jobs = [
        (name, "binary", target, fold, seed)
        for name in implemented_configurations(config, "table1")
        for seed in seeds_of(config, name)
        for fold in folds
        for target in paper.CLASSES
    ]
    jobs += [
        (name, "multiclass", "all", fold, seed)
        for name in implemented_configurations(config, "table2")
        for seed in seeds_of(config, name)
        for fold in folds
    ]
    return jobs


def targets_of(task: str) -> tuple[str, ...]:
    """The targets of a task's fold jobs: every emotion one-vs-rest (binary), "all" (multiclass)."""
    return paper.CLASSES if task == "binary" else ("all",)


def training_jobs(config: dict) -> list[tuple[str, str, int, int]]:
    """The workflow's training jobs, as (configuration, task, fold, seed): one process trains every target
    of a configuration, task, fold and seed (the 8 one-vs-rest models of a binary fold share its start-up
    and data); seeds are jobs of their own."""
    return list(dict.fromkeys((name, task, fold, seed) for name, task, _, fold, seed in fold_jobs(config)))


def trains_on_arrays(configuration: str) -> bool:
    """Whether TIM-Net trains ``configuration`` on feature arrays (avemotion.train): a single engineered
    feature or a fusion; a single backbone feature is fine-tuned end to end instead (avemotion.finetune)."""
    keys = registry.split_configuration(configuration)
    return len(keys) > 1 or not registry.get(keys[0]).is_backbone


def frozen_branches(configuration: str) -> tuple[str, ...]:
    """The backbone features whose frozen per-fold features a fusion reads (none for an engineered one)."""
    keys = registry.split_configuration(configuration)
    return tuple(k for k in keys if len(keys) > 1 and registry.get(k).is_backbone)


# Linux passes a job's whole shell command to bash as one argument, of at most 128 KiB (MAX_ARG_STRLEN): a
# group's --spec values stay under this many bytes (one binary configuration of 5 folds is about 23 kB).
SPEC_BYTES_PER_JOB = 96 * 1024


def training_groups(config: dict, task: str) -> list[tuple[str, ...]]:
    """The configurations of ``task`` that TIM-Net trains on feature arrays, in groups of at most
    ``jobs.configurations_per_job``, one training job each (config order within a group).

    Fusions that read a backbone's frozen features are grouped apart from the rest, sorted by those features,
    so that the other configurations do not wait for fine-tuning and a group waits for few backbones. Each
    part is cut into the fewest groups of near-equal size that respect the limit, and more where the
    group's training specs would exceed SPEC_BYTES_PER_JOB of command line."""
    size = int(config["jobs"]["configurations_per_job"])
    table = "table1" if task == "binary" else "table2"
    names = [n for n in implemented_configurations(config, table) if trains_on_arrays(n)]
    folds = sorted(folds_of(config))
    groups: list[tuple[str, ...]] = []
    for part in (
        [n for n in names if not frozen_branches(n)],
        sorted((n for n in names if frozen_branches(n)), key=frozen_branches),  # stable: config order kept
    ):
        if not part:
            continue
        spec_bytes = sum(
            len(train_spec(config, name, task, target, fold).to_json()) + 3  # quotes, a space; one seed
            for name in part
            for target in targets_of(task)
            for fold in folds
        )
        n_groups = max(math.ceil(len(part) / size), math.ceil(spec_bytes / SPEC_BYTES_PER_JOB))
        n_groups = min(n_groups, len(part))
        bounds = [round(i * len(part) / n_groups) for i in range(n_groups + 1)]
        groups += [tuple(part[a:b]) for a, b in itertools.pairwise(bounds)]
    return groups


def job_dir(configuration: str, task: str, target: str, fold: int | str, seed: int | str) -> str:
    """Where one model (a fold job of one seed) writes its outputs:
    ``results/<stage>/<configuration>/<task>/<target>/seed<seed>/fold<fold>``, stage ``finetune`` for a
    pretrained backbone fine-tuned on its own (avemotion.finetune), ``train`` for TIM-Net on feature arrays
    (avemotion.train)."""
    stage = "train" if trains_on_arrays(configuration) else "finetune"
    return f"results/{stage}/{configuration}/{task}/{target}/seed{seed}/fold{fold}"


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
        for name in experiment_configurations(config, table)
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
    # One-vs-rest TIM-Net jobs only: train a fold's targets as one stacked model (avemotion.stacked) on
    # "auto" (CUDA), "always" or "never" (config training.stack_targets).
    stack_targets: str = "never"
    # TIM-Net on feature arrays (single features and fusion) only: CPU precision "auto" (bfloat16 where the
    # CPU has bf16 dot products), "float32" or "bfloat16", and torch.compile of the bfloat16 CPU path
    # (config training.cpu_precision, training.compile; train.fast_path). Fine-tuning: float32, eager.
    cpu_precision: str = "float32"
    compile: bool = False
    # Multimodal fusion only (avemotion.models.FusionClassifier): one TIM-Net per branch, as dicts of feature,
    # frames, scales and channels (config.fusion_branches), and the 3-layer perceptron's two hidden widths and
    # dropout (config model.fusion). Empty for a single feature.
    branches: tuple[dict, ...] = ()
    fusion_hidden: tuple[int, ...] = ()
    fusion_dropout: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainSpec:
        data = json.loads(text)
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ConfigError(f"training spec has unknown keys {sorted(unknown)}")
        for key in ("test_actors", "branches", "fusion_hidden"):
            data[key] = tuple(data.get(key, ()))
        return cls(**data)

    @property
    def features(self) -> tuple[str, ...]:
        return registry.split_configuration(self.configuration)


def train_spec(
    config: dict, configuration: str, task: str, target: str, fold: int, seed: int | None = None
) -> TrainSpec:
    """The spec of the job training ``configuration`` for ``task``/``target`` on ``fold`` with ``seed`` (by
    default the configuration's first seed, ``seeds_of``)."""
    if task not in paper.TASKS:
        raise ConfigError(f"unknown task {task!r}; expected one of {paper.TASKS}")
    if (task == "multiclass") != (target == "all") or (task == "binary" and target not in paper.CLASSES):
        raise ConfigError(f"target {target!r} does not fit task {task!r}")
    keys = registry.split_configuration(configuration)
    if len(keys) > 1 and task != "multiclass":
        raise ConfigError(f"configuration {configuration!r}: multimodal fusion is an 8-class (Table 2) model")
    feature = registry.get(keys[0])
    fused = len(keys) > 1
    if fused:
        hp = config["training"]["fusion"][fusion_row(keys)]
        branches = tuple(fusion_branches(config, configuration))
        hp = {**hp, "channels": branches[0]["channels"]}
    else:
        hp, branches = config["training"]["hyperparameters"][keys[0]][task], ()
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
        seed=int(seeds_of(config, configuration)[0] if seed is None else seed),
        device=train["device"],
        beta1=float(opt["beta1"]),
        beta2=float(opt["beta2"]),
        eps=float(opt["eps"]),
        weight_decay=float(opt["weight_decay"]),
        label_smoothing=float(train["label_smoothing"]),
        # A backbone's inputs have their own fixed normalisation (ImageNet mean/std, per-utterance z-score).
        # Fusion branches are feature arrays (a backbone's frozen features included): standardised like any.
        standardize=bool(train["standardize"]) and (fused or not feature.is_backbone),
        backbone=dict(config["backbones"][feature.backbone]) if feature.is_backbone and not fused else None,
        mixed_precision=bool(train["mixed_precision"]) and feature.is_backbone and not fused,
        stack_targets=train["stack_targets"] if task == "binary" and not feature.is_backbone else "never",
        cpu_precision=train["cpu_precision"] if fused or not feature.is_backbone else "float32",
        compile=bool(train["compile"]) and (fused or not feature.is_backbone),
        branches=branches,
        fusion_hidden=tuple(model["fusion"]["hidden"]) if fused else (),
        fusion_dropout=float(model["fusion"]["dropout"]) if fused else 0.0,
    )
