# The two commands in README's quick start. Both create .venv when missing and install exactly the
# lock files in requirements/ (docs/development.md): nothing is resolved on the user's machine.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
PIP := $(BIN)/python -m pip
# Stage commands in dvc.yaml call `python`; make it the venv's.
export PATH := $(BIN):$(PATH)

# make run installs base.txt (the pipeline's dependencies); make test dev.txt (those, at the same
# versions, plus the dev, s3 and ssh extras).
LOCK := requirements/base.txt
LOCK_DEV := requirements/dev.txt

.PHONY: run test test-slow lint lock install install-dev install-s3 install-ssh clean

run: $(VENV)/.installed
	dvc repro

# Test files run on up to 4 processes (pytest-xdist; a file's tests stay on one, so its module
# fixtures are built once). A single file, or `pytest` by hand, runs in one process.
test: $(VENV)/.installed-dev
	pytest -n auto --maxprocesses 4 --dist loadfile

# The slow tier (-m slow: recipes as written on their whole data, the default run's 0.98, the
# multi-process faults): 37.5 minutes on 2 cores by file. Spread test by test it took 75, two
# recipes' trainings then compete for the cores. multidigit's recipes stay manual.
test-slow: $(VENV)/.installed-dev
	pytest -m slow -n auto --maxprocesses 4 --dist loadfile --durations=15

lint: $(VENV)/.installed-dev
	ruff check .

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev
# The plugins for S3 (and S3-compatible) and SSH remotes (docs/remotes.md) come with the dev lock,
# so a remote's client has the versions the tests ran.
install-s3 install-ssh: $(VENV)/.installed-dev

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# Each install also writes the page template of `dvc plots show`/`diff` with vega, vega-lite and
# vega-embed inlined (from vl-convert-python), so the page renders offline: .dvc/plots_page.html,
# git-ignored, set as plots.html_template in .dvc/config.local (docs/plots.md).
PLOTS_PAGE := $(BIN)/python -m imgpipe.plots_page

# The lock's packages with their hashes and no dependency resolution (--no-deps: the lock is the
# whole closure), then imgpipe itself, editable, built with the lock's setuptools.
define install_lock
	$(PIP) install --quiet --require-hashes --no-deps -r $(1)
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	$(PLOTS_PAGE)
endef

$(VENV)/.installed: $(LOCK) pyproject.toml src/imgpipe/plots_page.py | $(VENV)/bin/python
	$(call install_lock,$(LOCK))
	touch $@

$(VENV)/.installed-dev: $(LOCK_DEV) pyproject.toml src/imgpipe/plots_page.py | $(VENV)/bin/python
	$(call install_lock,$(LOCK_DEV))
	touch $(VENV)/.installed $@

# Regenerate both locks from pyproject.toml with pip-tools (in a venv of its own), for Linux
# x86-64 and Python 3.11, under pip's own constraint file when this machine's pip has one (a cap
# on torch: pip-compile does not read pip's configured constraint by itself). dev.txt is compiled
# under base.txt, so the two agree on every package they share. Setuptools (imgpipe's build
# backend) is in both, through torch; tests/repo/test_lock.py checks that it stays.
LOCK_VENV := .venv-lock
PIP_TOOLS := pip-tools==7.6.2
PIP_CONSTRAINT_FILE := $(shell $(PYTHON) -m pip config list 2>/dev/null | sed -n "s/^global\.constraint='\(.*\)'/\1/p")
COMPILE := $(LOCK_VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	--no-emit-index-url --no-emit-find-links $(if $(PIP_CONSTRAINT_FILE),--constraint=$(PIP_CONSTRAINT_FILE))

lock: | $(LOCK_VENV)/bin/pip-compile
	$(COMPILE) -o $(LOCK) pyproject.toml
	$(COMPILE) --extra dev --extra s3 --extra ssh --constraint=$(LOCK) -o $(LOCK_DEV) pyproject.toml

$(LOCK_VENV)/bin/pip-compile:
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet $(PIP_TOOLS)

clean:
	rm -rf $(VENV) $(LOCK_VENV)
