# Face, eye and mouth patches for the ResNets, per actor: results/patches/Actor_XX/<clip>/<stream>_<set>.mp4
# (streams face, eye_left, eye_right, mouth; sets finetune = 20 evenly spaced frames, central = the central 88).


rule crop_patches:
    input:
        clips="results/clips/clips.csv",
        videos="results/clips/Actor_{actor}",
        tracking="results/tracking/Actor_{actor}",
    output:
        directory("results/patches/Actor_{actor}"),
    log:
        "logs/crop_patches/{actor}.log",
    benchmark:
        "benchmarks/crop_patches/{actor}.tsv"
    conda:
        "../../envs/avemotion.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=60,
    params:
        options=json.dumps(avcfg.patch_params(config)),
    shell:
        "python -m avemotion.patches --clips {input.clips} --actor {wildcards.actor}"
        " --tracking {input.tracking} --out {output} --params {params.options:q} > {log} 2>&1"
