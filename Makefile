# Set-up, the main job and the tests. PYTHON may point at a virtual environment's python.
PYTHON ?= python3

.PHONY: install install-dev demo test benchmark

# The CPU build of PyTorch first (a plain 'torch' requirement could pull a multi-GB CUDA build), then
# the rest with that torch pinned, so that no dependency (stable-baselines3) upgrades it. The check
# reads the installed version without importing torch (which warns when NumPy is not there yet).
TORCH_PIN = $(PYTHON) -c "import importlib.metadata as m; print('torch==' + m.version('torch'))"

install:
	@$(TORCH_PIN) >/dev/null 2>&1 || $(PYTHON) -m pip install "torch==2.13.0"
	$(TORCH_PIN) | $(PYTHON) -m pip install -q -e . -c /dev/stdin

# What the tests need besides: MuJoCo, Stable-Baselines3, Ray, pytest, ruff.
install-dev: install
	$(TORCH_PIN) | $(PYTHON) -m pip install -q -e ".[dev]" -c /dev/stdin

# Meta-train MAML on 2D navigation and print the held-out adaptation table (needs no MuJoCo).
demo: install
	$(PYTHON) -m metarl train configs/navigation-maml.yaml

test: install-dev
	$(PYTHON) -m ruff check .
	$(PYTHON) -m pytest -q

benchmark: install-dev
	$(PYTHON) scripts/benchmark_iteration.py
	$(PYTHON) scripts/benchmark_meta_gradient.py
	$(PYTHON) scripts/benchmark_sampling.py
