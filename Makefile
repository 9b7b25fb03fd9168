# Set-up, the main job and the tests. PYTHON may point at a virtual environment's python.
PYTHON ?= python3

.PHONY: install demo test benchmark

# The CPU build of PyTorch first (a plain 'torch' requirement could pull a multi-GB CUDA build), then
# the rest with that torch pinned, so that no dependency (stable-baselines3) upgrades it.
install:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install "torch==2.13.0"
	$(PYTHON) -c "import torch; print('torch==' + torch.__version__)" | $(PYTHON) -m pip install -q -e ".[dev]" -c /dev/stdin

# Meta-train MAML on 2D navigation and print the held-out adaptation table.
demo: install
	$(PYTHON) -m metarl train configs/navigation-maml.yaml

test: install
	$(PYTHON) -m pytest -q

benchmark: install
	$(PYTHON) scripts/benchmark_iteration.py
	$(PYTHON) scripts/benchmark_meta_gradient.py
	$(PYTHON) scripts/benchmark_sampling.py
