rule extract_audio:
    input:
        clips="results/clips/clips.csv",
        videos="results/clips/Actor_{actor}",
    output:
        "results/audio/Actor_{actor}.npz",
    log:
        "logs/extract_audio/{actor}.log",
    benchmark:
        "benchmarks/extract_audio/{actor}.tsv"
    conda:
        "../../envs/avemotion.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "python -m avemotion.audio --clips {input.clips} --actor {wildcards.actor}"
        " --out {output} > {log} 2>&1"


rule extract_features:
    input:
        clips="results/clips/clips.csv",
        inputs=feature_inputs,
    output:
        features="results/features/{feature}/features.npy",
        index="results/features/{feature}/index.csv",
    log:
        "logs/extract_features/{feature}.log",
    benchmark:
        "benchmarks/extract_features/{feature}.tsv"
    conda:
        "../../envs/avemotion.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        config=lambda w: json.dumps(avcfg.feature_params(config, w.feature)),
    shell:
        "python -m avemotion.features {wildcards.feature} --clips {input.clips}"
        " --inputs {input.inputs} --params {params.config:q} --threads {threads}"
        " --out {output.features} --index {output.index} > {log} 2>&1"


# The frozen features of a fold come from that fold's fine-tuned 8-class backbone; with jobs.group_folds one
# job encodes every fold in turn.
rule extract_frozen:
    input:
        unpack(backbone_inputs),
        checkpoints=frozen_checkpoints,
        clips="results/clips/clips.csv",
    output:
        features=frozen_outputs("features.npy"),
        index=frozen_outputs("index.csv"),
    log:
        f"logs/extract_frozen/{{feature}}/{JOB_PART}.log",
    benchmark:
        f"benchmarks/extract_frozen/{{feature}}/{JOB_PART}.tsv"
    wildcard_constraints:
        feature="|".join(BACKBONE_FEATURES),
    priority: 10
    conda:
        "../../envs/avemotion.yaml"
    threads: 1
    resources:
        mem_mb=16000,
        runtime=120 * FOLDS_PER_JOB,
        gpu=1,
    shell:
        "python -m avemotion.finetune frozen --feature {wildcards.feature}"
        " --checkpoint {input.checkpoints} --inputs {input.inputs} --clips {input.clips}"
        " --out {output.features} --index {output.index} --threads {threads} > {log} 2>&1"
