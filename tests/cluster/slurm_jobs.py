"""How many SLURM jobs the slurm profile submits for the workflow in the current folder, counted by
Snakemake's own grouping (its DAG after ``update_groups``, with the profile's groups and group components),
without submitting anything. Prints JSON: {"total": N, "per_group_or_rule": {...}}.

    cd <project> && python tests/cluster/slurm_jobs.py [--configfile overlay.yaml]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml
from snakemake.api import SnakemakeApi
from snakemake.dag import DAG
from snakemake.settings.types import (
    ConfigSettings,
    DAGSettings,
    GroupSettings,
    OutputSettings,
    ResourceSettings,
    StorageSettings,
)

PROFILE = Path("workflow/profiles/slurm/config.yaml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", type=Path, action="append", default=[])
    args = parser.parse_args()
    profile = yaml.safe_load(PROFILE.read_text())
    groups = dict(entry.split("=") for entry in profile["groups"])
    components = {k: int(v) for k, v in (entry.split("=") for entry in profile["group-components"])}

    captured = {}
    update_groups = DAG.update_groups

    def capture(dag):  # the jobs to run and their groups, as the scheduler will see them
        update_groups(dag)
        captured.update(dag=dag, jobs=list(dag.needrun_jobs()))

    DAG.update_groups = capture
    with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
        workflow = api.workflow(
            resource_settings=ResourceSettings(cores=profile["cores"], nodes=profile["jobs"]),
            config_settings=ConfigSettings(configfiles=args.configfile),
            storage_settings=StorageSettings(),
            snakefile=Path("Snakefile"),
            workdir=Path.cwd(),
        )
        workflow.dag(DAGSettings()).execute_workflow(
            executor="dryrun",
            group_settings=GroupSettings(overwrite_groups=groups, group_components=components),
        )
    dag, local = captured["dag"], workflow._workflow._localrules
    submitted, counts = set(), {}
    for job in captured["jobs"]:
        group = dag._group.get(job)
        if group is not None:
            key, name = id(group), group.groupid
        elif job.rule.name in local or job.rule.norun:
            continue  # runs where Snakemake runs (downloads, prefetch) or not at all (rule all)
        else:
            key, name = id(job), job.rule.name
        if key not in submitted:
            submitted.add(key)
            counts[name] = counts.get(name, 0) + 1
    print(json.dumps({"total": len(submitted), "per_group_or_rule": dict(sorted(counts.items()))}))


if __name__ == "__main__":
    main()
