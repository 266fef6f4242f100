# One job trains every target of a configuration, task, fold and seed (config training.seeds, and
# training.finetune_seeds for the backbones: every seed is a job of its own, {seed} in its paths): the 8
# one-vs-rest models of a Table 1 fold (train_binary, finetune_binary) share one process's start-up and one
# read of the inputs; a Table 2 fold (train_multiclass, finetune_multiclass) is one model. With
# jobs.group_folds (the demo) one job trains every fold of its configuration, task and seed in turn: log and
# benchmark paths then end in seed<s>/folds.log and .tsv. With
# jobs.configurations_per_job > 1 the rules train_<task>_group<i> below train groups of configurations
# instead, and these two match none.
TRAIN_COMMAND = (
    "python -m avemotion.train --spec {params.specs:q} --features {params.features}"
    " --index {params.index} --clips {input.clips} --manifest {input.manifest}"
    " --out {params.out} --threads {threads} --tracking-uri {params.uri:q}"
    " --experiment-prefix {params.prefix} --diagnostic {log}.nonfinite.json > {log} 2>&1"
)


rule train_binary:
    input:
        unpack(configuration_features),
        clips="results/clips/clips.csv",
        manifest="results/clips/data_manifest.json",
    output:
        **fold_outputs("train", "binary"),
    log:
        f"logs/train_binary/{{configuration}}/seed{{seed}}/{JOB_PART}.log",
    benchmark:
        f"benchmarks/train_binary/{{configuration}}/seed{{seed}}/{JOB_PART}.tsv"
    wildcard_constraints:
        configuration=NO_CONFIGURATION if TRAIN_GROUPS["binary"] else CONFIGURATION,
    conda:
        "../../envs/avemotion.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=240 * FOLDS_PER_JOB,
    params:
        specs=train_specs_json("binary"),
        features=feature_args("binary", "features.npy"),
        index=feature_args("binary", "index.csv"),
        out=fold_dirs("train", "binary"),
        uri=JOB_MLFLOW_URI,
        prefix=config["mlflow"]["experiment_prefix"],
    shell:
        TRAIN_COMMAND


use rule train_binary as train_multiclass with:
    output:
        **fold_outputs("train", "multiclass"),
    log:
        f"logs/train_multiclass/{{configuration}}/seed{{seed}}/{JOB_PART}.log",
    benchmark:
        f"benchmarks/train_multiclass/{{configuration}}/seed{{seed}}/{JOB_PART}.tsv"
    wildcard_constraints:
        configuration=NO_CONFIGURATION if TRAIN_GROUPS["multiclass"] else CONFIGURATION,
    resources:
        mem_mb=4000,
        runtime=120 * FOLDS_PER_JOB,
    params:
        specs=train_specs_json("multiclass"),
        features=feature_args("multiclass", "features.npy"),
        index=feature_args("multiclass", "index.csv"),
        out=fold_dirs("train", "multiclass"),
        uri=JOB_MLFLOW_URI,
        prefix=config["mlflow"]["experiment_prefix"],


# Groups of configurations (jobs.configurations_per_job): the same command, over every configuration of the
# group in turn; runtime adds up.
for task, groups in TRAIN_GROUPS.items():
    for number, configurations in enumerate(groups, start=1):

        rule:
            name:
                f"train_{task}_group{number}"
            input:
                unpack(
                    lambda w, configurations=configurations: configuration_features(
                        w, configurations
                    )
                ),
                clips="results/clips/clips.csv",
                manifest="results/clips/data_manifest.json",
            output:
                fold_outputs("train", task, configurations),
            log:
                f"logs/train_{task}_group{number}/seed{{seed}}/{JOB_PART}.log",
            benchmark:
                f"benchmarks/train_{task}_group{number}/seed{{seed}}/{JOB_PART}.tsv"
            conda:
                "../../envs/avemotion.yaml"
            threads: 1
            resources:
                mem_mb=4000,
                runtime=(240 if task == "binary" else 120)
                * FOLDS_PER_JOB
                * len(configurations),
            params:
                specs=train_specs_json(task, configurations),
                features=feature_args(task, "features.npy", configurations),
                index=feature_args(task, "index.csv", configurations),
                out=fold_dirs("train", task, configurations),
                uri=JOB_MLFLOW_URI,
                prefix=config["mlflow"]["experiment_prefix"],
            shell:
                TRAIN_COMMAND


rule finetune_binary:
    input:
        unpack(backbone_inputs),
        clips="results/clips/clips.csv",
        manifest="results/clips/data_manifest.json",
    output:
        **fold_outputs("finetune", "binary"),
    log:
        f"logs/finetune_binary/{{configuration}}/seed{{seed}}/{JOB_PART}.log",
    benchmark:
        f"benchmarks/finetune_binary/{{configuration}}/seed{{seed}}/{JOB_PART}.tsv"
    wildcard_constraints:
        configuration="|".join(BACKBONE_FEATURES),
    conda:
        "../../envs/avemotion.yaml"
    threads: 1
    # runtime: minutes on one GPU. The 8 models of the costliest job (Eyes ResNet) are projected at about
    # 3 GPU-hours at an assumed 25 TFLOP/s (README, cost of the backbones); 24 h leaves room for slower cards
    # and stays under common 48 h partition limits.
    resources:
        mem_mb=16000,
        runtime=1440 * FOLDS_PER_JOB,
        gpu=1,
    params:
        specs=train_specs_json("binary"),
        out=fold_dirs("finetune", "binary"),
        uri=JOB_MLFLOW_URI,
        prefix=config["mlflow"]["experiment_prefix"],
    shell:
        "python -m avemotion.finetune train --spec {params.specs:q} --inputs {input.inputs}"
        " --clips {input.clips} --manifest {input.manifest} --out {params.out}"
        " --threads {threads} --tracking-uri {params.uri:q}"
        " --experiment-prefix {params.prefix} --diagnostic {log}.nonfinite.json > {log} 2>&1"


# The 8-class fine-tuning leads to the frozen features that multimodal fusion waits for: scheduled first.
use rule finetune_binary as finetune_multiclass with:
    output:
        **fold_outputs("finetune", "multiclass"),
    log:
        f"logs/finetune_multiclass/{{configuration}}/seed{{seed}}/{JOB_PART}.log",
    benchmark:
        f"benchmarks/finetune_multiclass/{{configuration}}/seed{{seed}}/{JOB_PART}.tsv"
    priority: 10
    resources:
        mem_mb=16000,
        runtime=600 * FOLDS_PER_JOB,
        gpu=1,
    params:
        specs=train_specs_json("multiclass"),
        out=fold_dirs("finetune", "multiclass"),
        uri=JOB_MLFLOW_URI,
        prefix=config["mlflow"]["experiment_prefix"],
