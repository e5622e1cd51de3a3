# The two commands in README's quick start. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
# Stage commands in dvc.yaml call `python`; make it the venv's.
export PATH := $(BIN):$(PATH)

.PHONY: run test install install-dev install-s3 clean

run: $(VENV)/.installed
	dvc repro

# Test files run on up to 4 processes (pytest-xdist; a file's tests stay on one, so its module
# fixtures are built once). A single file, or `pytest` by hand, runs in one process.
test: $(VENV)/.installed-dev
	pytest -n auto --maxprocesses 4 --dist loadfile

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# The plugin for S3 and S3-compatible DVC remotes (README: Sharing runs); `make test` has it too.
install-s3: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[s3]'

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# Each install also writes the page template of `dvc plots show`/`diff` with vega, vega-lite and
# vega-embed inlined (from vl-convert-python), so the page renders offline: .dvc/plots_page.html,
# git-ignored, set as plots.html_template in .dvc/config.local (docs/plots.md).
PLOTS_PAGE := $(BIN)/python -m imgpipe.plots_page

$(VENV)/.installed: pyproject.toml src/imgpipe/plots_page.py | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	$(PLOTS_PAGE)
	touch $@

$(VENV)/.installed-dev: pyproject.toml src/imgpipe/plots_page.py | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,s3]'
	$(PLOTS_PAGE)
	touch $(VENV)/.installed $@

clean:
	rm -rf $(VENV)
