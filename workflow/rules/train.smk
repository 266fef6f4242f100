rule train_model:
    input:
        unpack(configuration_features),
        clips="results/clips/clips.csv",
        manifest="results/clips/data_manifest.json",
    output:
        metrics="results/train/{configuration}/{task}/{target}/fold{fold}/metrics.json",
        predictions="results/train/{configuration}/{task}/{target}/fold{fold}/predictions.csv",
        history="results/train/{configuration}/{task}/{target}/fold{fold}/history.csv",
        confusion="results/train/{configuration}/{task}/{target}/fold{fold}/confusion.csv",
        checkpoint="results/train/{configuration}/{task}/{target}/fold{fold}/checkpoint.pt",
    log:
        "logs/train_model/{configuration}/{task}/{target}/fold{fold}.log",
    benchmark:
        "benchmarks/train_model/{configuration}/{task}/{target}/fold{fold}.tsv"
    conda:
        "../../envs/avemotion.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        spec=train_spec_json,
        out="results/train/{configuration}/{task}/{target}/fold{fold}",
        uri=MLFLOW_URI,
        prefix=config["mlflow"]["experiment_prefix"],
    shell:
        "python -m avemotion.train --spec {params.spec:q} --features {input.features}"
        " --index {input.index} --clips {input.clips} --manifest {input.manifest}"
        " --out {params.out} --threads {threads} --tracking-uri {params.uri:q}"
        " --experiment-prefix {params.prefix} > {log} 2>&1"


rule finetune_backbone:
    input:
        unpack(backbone_inputs),
        clips="results/clips/clips.csv",
        manifest="results/clips/data_manifest.json",
    output:
        metrics="results/finetune/{configuration}/{task}/{target}/fold{fold}/metrics.json",
        predictions="results/finetune/{configuration}/{task}/{target}/fold{fold}/predictions.csv",
        history="results/finetune/{configuration}/{task}/{target}/fold{fold}/history.csv",
        confusion="results/finetune/{configuration}/{task}/{target}/fold{fold}/confusion.csv",
        checkpoint="results/finetune/{configuration}/{task}/{target}/fold{fold}/checkpoint.pt",
    log:
        "logs/finetune_backbone/{configuration}/{task}/{target}/fold{fold}.log",
    benchmark:
        "benchmarks/finetune_backbone/{configuration}/{task}/{target}/fold{fold}.tsv"
    wildcard_constraints:
        configuration="|".join(BACKBONE_FEATURES),
    conda:
        "../../envs/avemotion.yaml"
    threads: 1
    resources:
        mem_mb=16000,
        runtime=600,
        gpu=1,
    params:
        spec=train_spec_json,
        out="results/finetune/{configuration}/{task}/{target}/fold{fold}",
        uri=MLFLOW_URI,
        prefix=config["mlflow"]["experiment_prefix"],
    shell:
        "python -m avemotion.finetune train --spec {params.spec:q} --inputs {input.inputs}"
        " --clips {input.clips} --manifest {input.manifest} --out {params.out}"
        " --threads {threads} --tracking-uri {params.uri:q}"
        " --experiment-prefix {params.prefix} > {log} 2>&1"
