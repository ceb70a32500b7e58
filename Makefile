# capcrawl: `make demo` and `make test` set everything up on a fresh machine, then run.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# torch/torchvision pinned to the builds this project is tested with (open_clip needs torchvision).
TORCH  := torch==2.14.1 torchvision==0.29.1
# Tests and the demo must not touch any network but loopback.
OFFLINE := scripts/offline.sh

.PHONY: setup demo test clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test,coca,cluster]'
	$(PY) -m compileall -q capcrawl common crawler filter shards
	touch $@

setup: $(VENV)/.installed

demo: setup
	HF_HUB_OFFLINE=1 $(OFFLINE) $(VENV)/bin/capcrawl demo --dir capcrawl-demo

test: setup
	$(VENV)/bin/lint-imports --no-cache
	HF_HUB_OFFLINE=1 $(OFFLINE) $(PY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf capcrawl-demo .pytest_cache
