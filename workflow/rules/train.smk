# One job trains every target of a configuration, task and fold: the 8 one-vs-rest models of a Table 1 fold
# (train_binary, finetune_binary) share one process's start-up and one read of the inputs; a Table 2 fold
# (train_multiclass, finetune_multiclass) is one model.


rule train_binary:
    input:
        unpack(configuration_features),
        clips="results/clips/clips.csv",
        manifest="results/clips/data_manifest.json",
    output:
        **fold_outputs("train", "binary"),
    log:
        "logs/train_binary/{configuration}/fold{fold}.log",
    benchmark:
        "benchmarks/train_binary/{configuration}/fold{fold}.tsv"
    conda:
        "../../envs/avemotion.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=240,
    params:
        specs=train_specs_json("binary"),
        out=fold_dirs("train", "binary"),
        uri=MLFLOW_URI,
        prefix=config["mlflow"]["experiment_prefix"],
    shell:
        "python -m avemotion.train --spec {params.specs:q} --features {input.features}"
        " --index {input.index} --clips {input.clips} --manifest {input.manifest}"
        " --out {params.out} --threads {threads} --tracking-uri {params.uri:q}"
        " --experiment-prefix {params.prefix} > {log} 2>&1"


use rule train_binary as train_multiclass with:
    output:
        **fold_outputs("train", "multiclass"),
    log:
        "logs/train_multiclass/{configuration}/fold{fold}.log",
    benchmark:
        "benchmarks/train_multiclass/{configuration}/fold{fold}.tsv"
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        specs=train_specs_json("multiclass"),
        out=fold_dirs("train", "multiclass"),
        uri=MLFLOW_URI,
        prefix=config["mlflow"]["experiment_prefix"],


rule finetune_binary:
    input:
        unpack(backbone_inputs),
        clips="results/clips/clips.csv",
        manifest="results/clips/data_manifest.json",
    output:
        **fold_outputs("finetune", "binary"),
    log:
        "logs/finetune_binary/{configuration}/fold{fold}.log",
    benchmark:
        "benchmarks/finetune_binary/{configuration}/fold{fold}.tsv"
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
        runtime=1440,
        gpu=1,
    params:
        specs=train_specs_json("binary"),
        out=fold_dirs("finetune", "binary"),
        uri=MLFLOW_URI,
        prefix=config["mlflow"]["experiment_prefix"],
    shell:
        "python -m avemotion.finetune train --spec {params.specs:q} --inputs {input.inputs}"
        " --clips {input.clips} --manifest {input.manifest} --out {params.out}"
        " --threads {threads} --tracking-uri {params.uri:q}"
        " --experiment-prefix {params.prefix} > {log} 2>&1"


# The 8-class fine-tuning leads to the frozen features that multimodal fusion waits for: scheduled first.
use rule finetune_binary as finetune_multiclass with:
    output:
        **fold_outputs("finetune", "multiclass"),
    log:
        "logs/finetune_multiclass/{configuration}/fold{fold}.log",
    benchmark:
        "benchmarks/finetune_multiclass/{configuration}/fold{fold}.tsv"
    priority: 10
    resources:
        mem_mb=16000,
        runtime=600,
        gpu=1,
    params:
        specs=train_specs_json("multiclass"),
        out=fold_dirs("finetune", "multiclass"),
        uri=MLFLOW_URI,
        prefix=config["mlflow"]["experiment_prefix"],
