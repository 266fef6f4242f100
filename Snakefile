# avemotion: RAVDESS emotion classification from speech and face features, raw data to the paper's tables.
#
# results/
#   demo/archives/          synthetic RAVDESS-layout archives (demo config only)
#   download/               Video_Speech_Actor_XX.zip (+ FacialTracking_Actors_01-24.zip) + .json records
#   clips/Actor_XX/         the 01-01-* audio-video clips; clips.csv (names, labels, folds), data_manifest.json
#   audio/Actor_XX.npz      central 140,800 samples per clip, mono
#   tracking/Actor_XX/      per clip: OpenFace 2.x contract CSV + JSON sidecar (backend, lost frames)
#   patches/Actor_XX/       per clip: face/eye/mouth patches (mp4 per stream and frame set) + JSON sidecar
#   features/<feature>/     features.npy (clips x frames x dims) + index.csv; backbones: fold<k>/ (frozen)
#   train/<configuration>/<task>/<target>/seed<s>/fold<k>/   metrics, predictions, history, confusion, checkpoint
#   finetune/<feature>/<task>/<target>/seed<s>/fold<k>/      the same, for a backbone fine-tuned under TIM-Net
#   tables/                 table1.{csv,md,tex}, table2.{csv,md,tex}: mean over folds and seeds, 95 % interval,
#                           spreads across folds and seeds, pooled, paper
#   figures/                Table 1 heat map, Table 2 grid, their interval plots, confusion/ and curves/
#   mlflow/                 MLflow store (mlflow.db), artifacts, parents.json (one parent run per configuration)
from snakemake.utils import min_version, validate

from avemotion import config as avcfg
from avemotion import io as avio

min_version("9.0")


configfile: "config.yaml"


# One message naming the key and what to do (Snakemake's own would dump the schema), then the schema's
# defaults filled in.
avcfg.validate_schema(config)
validate(config, "workflow/schemas/config.schema.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/openface.smk"
include: "workflow/rules/patches.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/aggregate.smk"


# Downloads need the internet, which cluster compute nodes usually lack: they run where Snakemake runs.
localrules:
    download_archive,
    download_tracking,
    prefetch_tracker_model,
    prefetch_backbone,


onstart:
    # Killed writers' leftovers.
    for stale in avio.remove_stale_temporaries("results"):
        print(f"removed {stale} (left by a killed job)")
    shell(MLFLOW_INIT)


rule all:
    default_target: True
    input:
        AGGREGATE_OUTPUTS,
        FROZEN,
