#!/usr/bin/env bash
# Run by Snakemake inside the new conda environment of envs/avemotion.yaml: install the project (and with it
# its pinned dependencies, pyproject.toml) from the checkout this script belongs to.
set -euo pipefail
project=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python -m pip install --no-cache-dir --disable-pip-version-check -e "$project"
