"""The allocator thresholds: large tensors come from (and return to) the heap once they are set,
and the trainer and the evaluation set them unless the config says not to."""

import platform
import subprocess
import sys

import pytest

from tests.helpers import ROOT, checkout_env

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="the thresholds are glibc's")

# Prints whether a fresh 20 MB tensor lies in the heap (brk) rather than in a mapping of its own.
IN_HEAP = """
import torch
block = torch.empty(5_000_000)
heap = [line.split()[0] for line in open('/proc/self/maps') if line.rstrip().endswith('[heap]')]
start, end = (int(address, 16) for address in heap[0].split('-'))
print(start <= block.data_ptr() < end)
"""

TRAINER = """
from metarl.experiment.config import load_config
from metarl.experiment.trainer import MetaTrainer
MetaTrainer(load_config('configs/navigation-maml.yaml', ['train.reuse_freed_memory={flag}'])).close()
"""

EVALUATION = """
from metarl.experiment.build import build_family_and_policy, initial_params
from metarl.experiment.config import load_config
from metarl.experiment.evaluation import evaluate
config = load_config('configs/navigation-maml.yaml', ['train.reuse_freed_memory={flag}', 'evaluation.tasks=2',
                     'evaluation.steps=0', 'evaluation.episodes_per_task=1'])
evaluate(config, initial_params(config, build_family_and_policy(config)[1]))
"""


def run(script: str) -> str:
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=checkout_env(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_a_large_tensor_gets_its_own_mapping_by_default():
    assert run(IN_HEAP) == "False"


@pytest.mark.slow
def test_after_reuse_freed_memory_a_large_tensor_comes_from_the_heap():
    reuse = "from metarl.experiment.allocator import reuse_freed_memory\nprint(reuse_freed_memory())"
    assert run(reuse + IN_HEAP) == "True"


@pytest.mark.slow
@pytest.mark.parametrize("flag", ["true", "false"])
def test_the_trainer_sets_the_thresholds_as_the_config_says(flag):
    assert run(TRAINER.format(flag=flag) + IN_HEAP) == flag.capitalize()


@pytest.mark.slow
@pytest.mark.parametrize("flag", ["true", "false"])
def test_the_evaluation_sets_the_thresholds_as_the_config_says(flag):
    assert run(EVALUATION.format(flag=flag) + IN_HEAP) == flag.capitalize()
