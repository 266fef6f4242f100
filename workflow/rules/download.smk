rule make_demo_archives:
    output:
        archives=expand(
            "results/demo/archives/Video_Speech_Actor_{actor}.zip", actor=ACTORS
        ),
        landmarks="results/demo/archives/ground_truth_landmarks.csv.gz",
        clips="results/demo/archives/ground_truth_clips.csv",
    log:
        "logs/make_demo_archives/make_demo_archives.log",
    benchmark:
        "benchmarks/make_demo_archives/make_demo_archives.tsv"
    conda:
        "../../envs/avemotion.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        args=DEMO_ARGS,
    shell:
        "python -m avemotion.demo --out results/demo/archives {params.args}"
        " --workers {threads} > {log} 2>&1"


rule download_archive:
    input:
        local=lambda w: (
            f"{ARCHIVES_DIR}/Video_Speech_Actor_{w.actor}.zip" if ARCHIVES_DIR else []
        ),
    output:
        archive="results/download/Video_Speech_Actor_{actor}.zip",
        record="results/download/Video_Speech_Actor_{actor}.json",
    log:
        "logs/download_archive/{actor}.log",
    benchmark:
        "benchmarks/download_archive/{actor}.tsv"
    conda:
        "../../envs/avemotion.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=120,
    params:
        source=lambda w, input: (
            f"local --src {input.local}"
            if ARCHIVES_DIR
            else f"fetch --url '{config['data']['base_url']}/Video_Speech_Actor_{w.actor}.zip?download=1'"
            f" --retries {config['download']['retries']} --timeout {config['download']['timeout_s']}"
        ),
        md5=lambda w: (
            f"--md5 {config['data']['md5'][f'Video_Speech_Actor_{w.actor}.zip']}"
            if f"Video_Speech_Actor_{w.actor}.zip" in config["data"]["md5"]
            else ""
        ),
    shell:
        "python -m avemotion.download {params.source} {params.md5}"
        " --out {output.archive} --record {output.record} > {log} 2>&1"


rule extract_clips:
    input:
        archive="results/download/Video_Speech_Actor_{actor}.zip",
        record="results/download/Video_Speech_Actor_{actor}.json",
    output:
        directory("results/clips/Actor_{actor}"),
    log:
        "logs/extract_clips/{actor}.log",
    benchmark:
        "benchmarks/extract_clips/{actor}.tsv"
    conda:
        "../../envs/avemotion.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=30,
    shell:
        "python -m avemotion.download extract --archive {input.archive}"
        " --record {input.record} --out {output} --pattern '01-01-*.mp4' > {log} 2>&1"


rule build_clip_table:
    input:
        clips=expand("results/clips/Actor_{actor}", actor=ACTORS),
        records=expand("results/download/Video_Speech_Actor_{actor}.json", actor=ACTORS),
    output:
        table="results/clips/clips.csv",
        manifest="results/clips/data_manifest.json",
    log:
        "logs/build_clip_table/build_clip_table.log",
    benchmark:
        "benchmarks/build_clip_table/build_clip_table.tsv"
    conda:
        "../../envs/avemotion.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        folds=lambda w: json.dumps(config["folds"]),
        actors=ACTOR_ARGS,
        expected=config["data"]["expected_clips"],
    shell:
        "python -m avemotion.clips --clips-dir {input.clips} --records {input.records}"
        " --folds {params.folds:q} --actors {params.actors} --expected {params.expected}"
        " --out {output.table} --manifest {output.manifest} > {log} 2>&1"


# Pretrained weights, for users with internet: downloaded once into resources/weights/<backbone> so that
# compute nodes without internet load them from disk (`make weights` fetches all three).
rule prefetch_backbone:
    output:
        directory("resources/weights/{backbone}"),
    log:
        "logs/prefetch_backbone/{backbone}.log",
    benchmark:
        "benchmarks/prefetch_backbone/{backbone}.tsv"
    wildcard_constraints:
        backbone="|".join(config["backbones"]),
    conda:
        "../../envs/avemotion.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=120,
    params:
        options=lambda w: json.dumps(config["backbones"][w.backbone]),
    shell:
        "python -m avemotion.backbones prefetch --name {wildcards.backbone}"
        " --params {params.options:q} --out {output} > {log} 2>&1"
