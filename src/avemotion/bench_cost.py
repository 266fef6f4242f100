"""The full reproduction's cost per rule, from the measurements the other benchmarks wrote on this machine.

Inputs (under ``--out-dir``, written by the same machine's earlier runs):

- ``backbones.json`` (``bench backbones``): the fine-tuning and frozen-extraction rules, already projected per
  rule from measured clips/s (and FLOP counts);
- ``timnet.json`` (``bench timnet``): samples/s and FLOPs per sample of a TIM-Net training step per feature
  shape; a training job costs targets x epochs x n_train samples at its configuration's rate, a fusion
  configuration the sum of its branches' times (they run one after the other in a step), plus the first
  epoch's extra seconds (the compile) once per TIM-Net;
- the Snakemake benchmark files of the last run in this folder (``benchmarks/<rule>/...tsv``, the demo's:
  its clips are real-format 1280x720, 30 fps, 48 kHz): seconds per clip of every per-clip rule (archive
  extraction, audio, tracking, patches, features), scaled to the full run's clips.

Per rule it gives CPU-hours (at the measuring threads; wall-clock of one job at a time) and GPU-hours at an
ASSUMED sustained throughput for the FLOP-counted rules (no GPU was measured unless ``backbones.json`` came
from one). Start-up per job (``bench startup``) is added to every rule's CPU-hours.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from avemotion import config as avcfg
from avemotion import paper, registry
from avemotion.bench_startup import recorded_seconds

# Per-clip rules measured in a workflow run, and how many of their units the full run has (clips).
PER_CLIP_RULES = ("extract_clips", "extract_audio", "extract_openface", "crop_patches", "extract_features")


def configuration_shapes(configuration: str) -> list[tuple[int, int]]:
    """(frames, dims) of each TIM-Net a configuration trains: its feature, or each fusion branch (a backbone
    branch reads its frozen features)."""
    keys = registry.split_configuration(configuration)
    fused = len(keys) > 1
    shapes = []
    for key in keys:
        f = registry.get(key)
        shapes.append((f.frozen_frames if fused and f.is_backbone else f.frames, f.dims))
    return shapes


def timnet_rows(config: dict, timnet: dict, gpu_tflops: float) -> list[dict]:
    """One row per TIM-Net training rule (train_binary, train_multiclass) of the configured run."""
    from avemotion.bench import fold_clips

    rates = {r["shape"]: r for r in timnet["rows"]}
    folds = fold_clips(config)
    first_fold = min(folds)
    grouped = config["jobs"]["group_folds"]  # one job (one start-up, one compile) for every fold
    # jobs.configurations_per_job: a job starts with the first configuration of its group
    starts = (
        {(task, group[0]) for task in paper.TASKS for group in avcfg.training_groups(config, task)}
        if config["jobs"]["configurations_per_job"] > 1
        else None
    )
    totals: dict[str, dict] = {}
    for configuration, task, fold, seed in avcfg.training_jobs(config):
        keys = registry.split_configuration(configuration)
        if len(keys) == 1 and registry.get(keys[0]).is_backbone:
            continue  # fine-tuned: backbones.json
        target = "all" if task == "multiclass" else paper.CLASSES[0]
        spec = avcfg.train_spec(config, configuration, task, target, fold, seed)
        n_train, n_test = folds[fold]
        models = len(paper.CLASSES) if task == "binary" else 1
        samples = models * (spec.epochs * n_train + n_test)
        seconds_per_sample = flops = fixed_seconds = 0.0
        for frames, dims in configuration_shapes(configuration):
            row = rates.get(f"{frames}x{dims}")
            if row is None:
                raise KeyError(
                    f"timnet.json has no shape {frames}x{dims}; rerun `bench timnet` without --shapes"
                )
            seconds_per_sample += 1 / row["ours_samples_per_s"]
            flops += row["gflop_per_sample"] * 1e9
            # The first epoch's extra seconds (the compile, measured cold: an upper bound, as later jobs on
            # one machine find the compiled kernels in torch's cache), once per TIM-Net of the job.
            fixed_seconds += row.get("ours_first_epoch_extra_s", 0.0)
        first = not grouped or fold == first_fold
        fixed_seconds *= first
        new_job = first and (starts is None or (task, configuration) in starts)
        rule = f"train_{task}"
        t = totals.setdefault(rule, {"rule": rule, "jobs": 0, "models": 0, "cpu_hours": 0.0, "flops": 0.0})
        t["jobs"] += new_job
        t["models"] += models
        t["cpu_hours"] += (samples * seconds_per_sample + fixed_seconds) / 3600
        t["flops"] += samples * flops
    return [
        {**t, "gpu_hours_assumed": t["flops"] / (gpu_tflops * 1e12) / 3600, "source": "bench timnet"}
        for t in totals.values()
    ]


def backbone_rows(backbones: dict, finetune_seeds: int = 1) -> list[dict]:
    """The per-rule totals ``bench backbones`` projected, its fine-tuning rules scaled from the fine-tuning
    seeds it projected (``finetune_seeds`` in backbones.json; 1 where it predates seeds) to
    ``finetune_seeds``."""
    out = []
    scale = finetune_seeds / backbones.get("finetune_seeds", 1)
    for r in backbones["rows"]:
        if r.get("feature") == "total" and r["rule"] != "total":
            k = scale if r["rule"].startswith("finetune_") else 1
            cpu = r["measured_hours"] if backbones["machine"]["device"] == "cpu" else math.nan
            out.append(
                {
                    "rule": r["rule"],
                    "jobs": round(r["jobs"] * k),
                    "models": None,
                    "cpu_hours": cpu * k,
                    "flops": math.nan,
                    "gpu_hours_assumed": r["gpu_hours_assumed"] * k,
                    "source": "bench backbones",
                }
            )
    return out


def per_clip_rows(config: dict, benchmarks: Path, run_clips: int) -> list[dict]:
    """Per-clip rules: the last run's recorded seconds (its ``run_clips`` clips) scaled to the full run."""
    from avemotion.bench import clips_per_actor

    full_clips = clips_per_actor(config) * len(config["data"]["actors"])
    out = []
    for rule in PER_CLIP_RULES:
        files = sorted((benchmarks / rule).glob("**/*.tsv"))
        if not files:
            continue
        seconds = sum(recorded_seconds(f) for f in files)
        out.append(
            {
                "rule": rule,
                "jobs": None,
                "models": None,
                "cpu_hours": seconds / run_clips * full_clips / 3600,
                "flops": math.nan,
                "gpu_hours_assumed": math.nan,
                "source": f"{len(files)} recorded jobs, {run_clips} clips",
            }
        )
    return out


def cost_table(
    config: dict,
    out_dir: Path,
    benchmarks: Path,
    run_clips: int | None,
    startup: dict | None,
    gpu_tflops: float,
) -> list[dict]:
    rows = []
    if (out_dir / "backbones.json").exists():
        finetune_seeds = len(config["training"]["finetune_seeds"])
        rows += backbone_rows(json.loads((out_dir / "backbones.json").read_text()), finetune_seeds)
    rows += timnet_rows(config, json.loads((out_dir / "timnet.json").read_text()), gpu_tflops)
    if run_clips:
        rows += per_clip_rows(config, benchmarks, run_clips)
    if startup:
        # A group's rules (train_<task>_group<i>) count as their task's rule, at their mean start-up per job.
        found: dict[str, list[float]] = {}
        for r in startup["rows"]:
            found.setdefault(re.sub(r"_group\d+$", "", r["rule"]), []).append(r["per_job_s"])
        per_job = {rule: sum(v) / len(v) for rule, v in found.items()}
        for r in rows:
            if r["jobs"] and r["rule"] in per_job and not math.isnan(r["cpu_hours"]):
                r["startup_hours"] = r["jobs"] * per_job[r["rule"]] / 3600
                r["cpu_hours"] += r["startup_hours"]
    return rows


def seed_costs(config: dict, rows: list[dict]) -> list[str]:
    """What the seeds cost: the training rules' hours per seed (config ``training.seeds`` for the TIM-Net
    rules, ``training.finetune_seeds`` for the fine-tuning ones), i.e. what one more seed adds."""
    lines = []
    for key, prefix, what in (
        ("seeds", "train_", "TIM-Net on feature arrays (train_*)"),
        ("finetune_seeds", "finetune_", "backbone fine-tuning (finetune_*)"),
    ):
        k = len(config["training"][key])
        found = [r for r in rows if r["rule"].startswith(prefix)]
        if not found:
            continue
        cpu = sum(r["cpu_hours"] for r in found if not math.isnan(r["cpu_hours"]))
        gpu = sum(r["gpu_hours_assumed"] for r in found if not math.isnan(r["gpu_hours_assumed"]))
        lines.append(
            f"- {what}: {k} seed(s) (training.{key}) cost {cpu:,.1f} CPU-hours / {gpu:.1f} GPU-hours "
            f"(assumed); each more seed adds {cpu / k:,.1f} CPU-hours / {gpu / k:.1f} GPU-hours."
        )
    return lines


def render(rows: list[dict]) -> str:
    lines = [
        "| rule | jobs | models | CPU-hours | of which start-up | GPU-hours (assumed) | from |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]

    def cell(v, fmt):
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)

    for r in rows:
        lines.append(
            f"| {r['rule']} | {cell(r['jobs'], '{:d}')} | {cell(r['models'], '{:d}')} | "
            f"{cell(r['cpu_hours'], '{:,.1f}')} | {cell(r.get('startup_hours'), '{:.2f}')} | "
            f"{cell(r['gpu_hours_assumed'], '{:.2f}')} | {r['source']} |"
        )
    cpu = sum(r["cpu_hours"] for r in rows if not math.isnan(r["cpu_hours"]))
    gpu = sum(r["gpu_hours_assumed"] for r in rows if not math.isnan(r["gpu_hours_assumed"]))
    lines.append(f"| **total** | | | **{cpu:,.0f}** | | **{gpu:.1f}** | |")
    return "\n".join(lines)
