# The "OpenFace extraction" stage: every clip tracked into the OpenFace 2.x contract
# (results/tracking/Actor_XX/<clip>.csv + <clip>.json sidecar) by the backend in config tracking.backend.


rule prefetch_tracker_model:
    output:
        TRACKING["mediapipe"]["model"],
    log:
        "logs/prefetch_tracker_model/prefetch_tracker_model.log",
    benchmark:
        "benchmarks/prefetch_tracker_model/prefetch_tracker_model.tsv"
    conda:
        "../../envs/avemotion.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=10,
    params:
        url=TRACKING["mediapipe"]["model_url"],
    shell:
        "python -m avemotion.facemesh prefetch --url {params.url:q} --out {output} > {log} 2>&1"


rule download_tracking:
    input:
        local=TRACKING["precomputed"]["archive"] or [],
    output:
        archive=f"results/download/{TRACKING_ARCHIVE}.zip",
        record=f"results/download/{TRACKING_ARCHIVE}.json",
    log:
        "logs/download_tracking/download_tracking.log",
    benchmark:
        "benchmarks/download_tracking/download_tracking.tsv"
    conda:
        "../../envs/avemotion.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=240,
    params:
        source=lambda w, input: (
            f"local --src {input.local}"
            if input.local
            else f"fetch --url '{TRACKING['precomputed']['url']}'"
            f" --retries {config['download']['retries']} --timeout {config['download']['timeout_s']}"
        ),
        md5=TRACKING["precomputed"]["md5"],
        size=TRACKING["precomputed"]["size"],
    shell:
        "python -m avemotion.download {params.source} --md5 {params.md5} --size {params.size}"
        " --out {output.archive} --record {output.record} > {log} 2>&1"


rule extract_openface:
    input:
        unpack(tracking_inputs),
        clips="results/clips/clips.csv",
        videos="results/clips/Actor_{actor}",
    output:
        directory("results/tracking/Actor_{actor}"),
    log:
        "logs/extract_openface/{actor}.log",
    benchmark:
        "benchmarks/extract_openface/{actor}.tsv"
    conda:
        "../../envs/avemotion.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=120,
    params:
        backend=TRACKING["backend"],
        options=json.dumps(TRACKING[TRACKING["backend"]]),
        archive=lambda w, input: (
            f"--archive {input.archive} --record {input.record}"
            if "archive" in input.keys()
            else ""
        ),
    shell:
        "python -m avemotion.tracking {params.backend} --clips {input.clips}"
        " --actor {wildcards.actor} --out {output} --params {params.options:q}"
        " {params.archive} > {log} 2>&1"
