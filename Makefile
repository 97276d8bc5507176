# Each target creates .venv (once) and installs what it needs into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: demo test bench lint install clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

$(VENV)/.demo-installed: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -e ".[train,viz,report]"
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -e ".[dev]"
	touch $@

install: $(VENV)/.demo-installed

demo: $(VENV)/.demo-installed
	$(PY) -m vitlens demo --out runs/demo

test: $(VENV)/.dev-installed
	bash scripts/ensure-chromium.sh
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -n 2 --dist loadfile

$(VENV)/.bench-installed: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -e ".[dev,bench]"
	touch $@

bench: $(VENV)/.bench-installed
	$(PY) benchmarks/run.py
	$(PY) benchmarks/run.py --system-allocator --cases tiny224,small224 --modes plain,maps_all \
		--peers timm,hf --stem speed_system_allocator
	$(PY) benchmarks/high_resolution.py

lint: $(VENV)/.dev-installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
