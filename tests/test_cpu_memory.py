"""trl_ppo_plus.cpu_memory: with a fixed mmap threshold, glibc returns a freed tensor's memory to the OS."""

import ctypes
import os
import subprocess
import sys

import pytest
import torch
from ppo_helpers import DigitReward, fast_args, prompts_dataset

from trl_ppo_plus import PPOTrainer
from trl_ppo_plus.cpu_memory import set_malloc_mmap_threshold


MIB = 2**20
LIBC = ctypes.CDLL(None) if sys.platform.startswith("linux") else None
glibc = pytest.mark.skipif(LIBC is None or not hasattr(LIBC, "mallinfo2"), reason="needs glibc (Linux)")


CHILD = """
import ctypes, torch
from trl_ppo_plus.cpu_memory import set_malloc_mmap_threshold

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks "
                                                      "fordblks keepcost").split()]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype, libc.malloc.restype, libc.free.argtypes = MallInfo2, ctypes.c_void_p, [ctypes.c_void_p]
set = set_malloc_mmap_threshold(2**20) if {fixed} else False
libc.free(libc.malloc(30 * 2**20))  # glibc's default would now serve blocks below 30 MiB from its heap
before = libc.mallinfo2().hblkhd  # bytes in blocks mmapped on their own
activation = torch.ones(4 * 2**20, dtype=torch.uint8)
mapped = libc.mallinfo2().hblkhd - before
del activation
print(set, mapped, libc.mallinfo2().hblkhd - before)
"""


@glibc
@pytest.mark.parametrize("fixed", [True, False])
def test_freed_tensor_goes_back_to_the_os(fixed):
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    run = subprocess.run([sys.executable, "-c", CHILD.format(fixed=fixed)], env=env, capture_output=True, text=True)
    was_set, mapped, left = run.stdout.split()
    if fixed:  # a mapping of its own, unmapped when freed
        assert was_set == "True" and int(mapped) >= 4 * MIB and int(left) < 4 * MIB
    else:  # glibc's default: a heap block, kept by the process after it is freed
        assert int(mapped) == 0


def test_environment_variable_wins_and_bounds(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert not set_malloc_mmap_threshold(MIB)
    with pytest.raises(ValueError, match="32 MiB"):
        set_malloc_mmap_threshold(64 * MIB)


def test_cpu_trainer_sets_the_configured_threshold(tiny_model_path, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("trl_ppo_plus.trainer.set_malloc_mmap_threshold", calls.append)
    for threshold in (4 * MIB, None):
        PPOTrainer(
            model=tiny_model_path,
            reward_funcs=DigitReward(tiny_model_path),
            args=fast_args(tmp_path, cpu_malloc_mmap_threshold=threshold),
            train_dataset=prompts_dataset(8),
        )
    assert calls == ([4 * MIB] if not torch.cuda.is_available() else [])
