# Two entry points for a newcomer: `make run` (install, then the default pipeline) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(abspath $(VENV)/bin)
# The offline mirror beside a checkout in this workplace; elsewhere torchvision downloads into data/.
ACDISTILL_DATA_DIR ?= $(if $(wildcard ../shared/data/*.npz),$(abspath ../shared/data),)
export ACDISTILL_DATA_DIR
export DVC_NO_ANALYTICS := 1
export PATH := $(BIN):$(PATH)

.PHONY: install run lint test test-slow

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e ".[test,robustbench,jobs]"
	@# torchattacks' wheel bundles an old copy of robustbench's modules; the real ones must be the last written
	$(PY) -m pip install --quiet --force-reinstall --no-deps robustbench==1.1.1
	touch $@

install: $(VENV)/.installed

run: install
	@git rev-parse HEAD >/dev/null 2>&1 || { echo "dvc needs a git repository with a commit: git init && git add -A && git commit -m init"; exit 1; }
	dvc repro

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(PY) -m pytest -m "not slow" -q

test-slow: install
	$(PY) -m pytest -m slow -q
