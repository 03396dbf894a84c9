# Everything runs from a virtual environment in .venv, created on first use.
PYTHON ?= python3
VENV := .venv
# torch 2.14.1 with its matching torchvision (which timm needs); on a CUDA machine pip takes
# the CUDA build of the same release.
TORCH := torch==2.14.1 torchvision==0.29.1

export RAY_USAGE_STATS_ENABLED := 0

.PHONY: install test search

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet $(TORCH) -e ".[test]"
	touch $@

install: $(VENV)/.installed

test: install
	$(VENV)/bin/python -m pytest

search: install
	$(VENV)/bin/python -m tuner.search
