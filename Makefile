# Two commands do all the set-up: `make run` and `make test`.
# Both create .venv when it is missing and install the project into it.

PYTHON ?= python3
VENV   := .venv
BIN    := $(abspath $(VENV))/bin
STAMP  := $(VENV)/.installed-stamp
CORES  ?= all
# `make run CONFIG=config/thin_walls.yaml` overlays a config (checked before Snakemake starts).
CONFIG ?=
SMK_CONFIG := $(if $(CONFIG),--configfile $(CONFIG),)

# Rules call `python -m sim|recon|models`: make them find the venv's python.
export PATH := $(BIN):$(PATH)

.PHONY: run test cluster-test install lint dryrun clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: it is the offline CPU build; anything unpinned pulls CUDA wheels.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev,gate]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m sim run --cores $(CORES) $(SMK_CONFIG)
	$(BIN)/python -m sim run --report results/report.html $(SMK_CONFIG)

# Two pytest workers (pytest-xdist), a test file to each, the longest first (tests/conftest.py):
# the suite takes about 13 minutes on 2 cores (README, the `make test` row of the measured
# times). `make test PYTEST_WORKERS=0` runs it in one process.
PYTEST_WORKERS ?= 2

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile
	$(BIN)/snakemake --lint
	$(BIN)/snakemake --dry-run --quiet rules

# A private one-node Slurm cluster on this machine (Debian's packages; needs root), then the
# workflow's cluster test through `profiles/slurm` (tests/workflow/test_cluster.py; 8 minutes
# on 2 cores). Private: its config, munge key, daemons' state and logs are in
# SLURM_LOCAL_STATE, its ports are not Slurm's defaults, nothing is written under /etc, and
# start.sh refuses where a Slurm of the machine's runs; pytest (and the Slurm commands the
# executor plugin calls) reach it through SLURM_CONF, the jobs' srun through the state
# folder's bin/ (the test puts it on PATH). profiles/slurm/local/stop.sh stops it.
SLURM_LOCAL_STATE ?= /var/tmp/positron-nde-slurm
cluster-test: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[slurm]"
	SLURM_LOCAL_STATE=$(abspath $(SLURM_LOCAL_STATE)) profiles/slurm/local/start.sh
	SLURM_CONF=$(abspath $(SLURM_LOCAL_STATE))/slurm.conf \
		$(BIN)/python -m pytest -m cluster -s tests/workflow/test_cluster.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/snakemake --lint

clean-venv:
	rm -rf $(VENV)
