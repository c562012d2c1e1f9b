# Set-up, demo and tests. `make demo` and `make test` do all the set-up they need:
# they create .venv if needed and (re)install the package whenever pyproject.toml
# or constraints.txt changed since the last install.

PYTHON ?= python3
VENV   ?= .venv
STAMP  := $(VENV)/.installed
PY     := $(VENV)/bin/python

.PHONY: all install demo test lint clean

all: test

install: $(STAMP)

# Dev and CI installs pin torch through constraints.txt (the CPU build, 2.13.0):
# a bare torch requirement would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { \
	    echo "make: '$(PYTHON) -m venv' failed; on Debian: apt-get install python3-venv" >&2; exit 1; }
	$(PY) -m pip install -c constraints.txt -e '.[test]'
	@touch $@

# The main job: compile the model zoo through the sandbox, print what happened.
# MODELS="mlp convnet" picks zoo entries (default: all).
demo: $(STAMP)
	$(VENV)/bin/sandbox demo $(if $(MODELS),--models $(MODELS))

# pytest's exit code 5 means "no tests collected": a failure here, never a pass.
# Test files run on PYTEST_WORKERS processes (a file's tests on one, so its fixtures are built once);
# PYTEST_WORKERS=0 runs them in this one.
PYTEST_WORKERS ?= 2

test: $(STAMP)
	@$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	exit $$rc

# Style (ruff) and the one-way layers (import-linter contracts in pyproject.toml).
lint: $(STAMP)
	$(VENV)/bin/ruff check sandbox dashboard tests bench
	$(VENV)/bin/ruff format --check sandbox dashboard tests bench
	$(VENV)/bin/lint-imports --no-cache

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
