# east — common tasks. `make test` works on a fresh clone: it creates .venv when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The exact torch build. Here it is the local CPU wheel; on a GPU machine use e.g.
#   make install TORCH_SPEC="torch==2.13.0" TORCH_INDEX=https://download.pytorch.org/whl/cu128
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
STAMP := $(VENV)/.installed-stamp

.PHONY: install test lint format clean mule-parity hear-validate

$(STAMP): pyproject.toml $(wildcard requirements/*.txt)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test,export]"
	@if [ -s requirements/parity.txt ]; then \
		$(PY) -m pip install -q --no-deps -r requirements/parity.txt; fi
	@touch $@

install: $(STAMP)  ## create .venv and install east with its test extras

test: $(STAMP)  ## run the test suite
	$(PY) -m pytest -q

lint: $(STAMP)  ## ruff lint + format check
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff check --fix src tests benchmarks
	$(VENV)/bin/ruff format src tests benchmarks

clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache

# MULE parity (not part of `make test`): upstream sxmp-mule needs tensorflow 2.13 + numpy < 2, so
# it gets its own venv; scripts/mule_parity.py compares east's PyTorch MULE against it.
MULE_PYTHON ?= $(PYTHON)
MULE_VENV ?= .venv-mule
MULE_STAMP := $(MULE_VENV)/.installed-stamp

$(MULE_STAMP): scripts/mule-parity-requirements.txt
	@test -x $(MULE_VENV)/bin/python || $(MULE_PYTHON) -m venv $(MULE_VENV)
	$(MULE_VENV)/bin/python -m pip install -q -r scripts/mule-parity-requirements.txt
	$(MULE_VENV)/bin/python -m pip install -q --no-deps sxmp-mule==1.1.2
	@touch $@

mule-parity: $(STAMP) $(MULE_STAMP)  ## east's MULE vs upstream TensorFlow MULE on real audio
	$(PY) scripts/mule_parity.py --mule-python $(MULE_VENV)/bin/python

# HEAR validation (not part of `make test`): the official hear-validator (PyPI hearvalidator)
# imports TensorFlow, so it gets its own venv. `make hear-validate RUN=runs/...` exports the run's
# student with `east export --format hear`, pip-installs the package there and validates it.
HEAR_PYTHON ?= $(PYTHON)
HEAR_VENV ?= .venv-hear
HEAR_STAMP := $(HEAR_VENV)/.installed-stamp
HEAR_NAME ?= east_student_hear
HEAR_DIR ?= $(HEAR_VENV)/export/$(HEAR_NAME)
HEAR_DEVICE ?= cpu

$(HEAR_STAMP):
	@test -x $(HEAR_VENV)/bin/python || $(HEAR_PYTHON) -m venv $(HEAR_VENV)
	$(HEAR_VENV)/bin/python -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(HEAR_VENV)/bin/python -m pip install -q tensorflow-cpu==2.21.0 "setuptools>=61"
	$(HEAR_VENV)/bin/python -m pip install -q --no-deps hearvalidator==2021.0.2
	@touch $@

hear-validate: $(STAMP) $(HEAR_STAMP)  ## official hear-validator on RUN's student as a HEAR module
	@test -n "$(RUN)" || { echo "give the run: make hear-validate RUN=runs/<run dir>"; exit 2; }
	rm -rf $(HEAR_DIR) && mkdir -p $(dir $(HEAR_DIR))
	$(VENV)/bin/east export "$(RUN)" --format hear --out $(HEAR_DIR) --name $(HEAR_NAME)
	$(HEAR_VENV)/bin/python -m pip install -q --no-deps --no-build-isolation --force-reinstall $(HEAR_DIR)
	cd $(HEAR_VENV) && bin/hear-validator $(HEAR_NAME) -d $(HEAR_DEVICE)

# ---- make reproduce: every experiment of both papers, then `east report` (docs/reproduce.md)
# DATA_ROOT/<openmic|mtat|esc50|fma_small> in the official layouts; WEIGHTS: teacher weights
# folder (default $EAST_WEIGHTS_DIR); SEEDS: e.g. "1223 1224 1225"; SET: extra --set for every
# training run (e.g. SET="train.max_epochs=5"); ONLY: steps whose id contains this text.
# DRY_RUN=1 prints the plan and what is missing; PARTIAL=1 runs what can run.
DATA_ROOT ?= data
CACHE ?= cache
RUNS ?= runs
REPORT ?= reports
DEVICE ?= auto
SEEDS ?= 1223
WEIGHTS ?=
SET ?=
ONLY ?=
_yes = $(filter 1 yes true,$(1))

.PHONY: reproduce
reproduce: $(STAMP)  ## the papers' experiments → $(REPORT) (DRY_RUN=1 / PARTIAL=1)
	$(PY) -m east.reproduce --data-root "$(DATA_ROOT)" --cache "$(CACHE)" --runs "$(RUNS)" \
		--report "$(REPORT)" --device "$(DEVICE)" --seeds "$(SEEDS)" \
		$(if $(WEIGHTS),--weights "$(WEIGHTS)") $(if $(SET),--set "$(SET)") \
		$(if $(ONLY),--only "$(ONLY)") \
		$(if $(call _yes,$(DRY_RUN)),--dry-run) $(if $(call _yes,$(PARTIAL)),--partial)

# ---- make demo: both stages end to end, offline, on a small synthetic task with a teacher the
# demo trains itself (src/east/demo.py); make demo-real: ESC-50 fold 4 + the real fcn-msd tagger.
DEMO_OUT ?= demo-out
.PHONY: demo demo-real
demo: $(STAMP)  ## offline end-to-end run (self-made teacher) → $(DEMO_OUT)/report
	$(PY) -m east.demo --out "$(DEMO_OUT)"

demo-real: $(STAMP)  ## the same on real ESC-50 clips with the pre-trained fcn-msd tagger
	EAST_WEIGHTS_DIR="$${EAST_WEIGHTS_DIR:-$${EAST_SHARED:-../shared}/weights}" \
		$(PY) -m east.demo --real --out "$(DEMO_OUT)-real"
