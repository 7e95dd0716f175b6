"""Two CPU processes under `accelerate launch`: every rank ends with the same β and the same weights."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
@pytest.mark.parametrize("num_ppo_epochs", [2, 1], ids=["two epochs", "fast path"])
def test_two_processes_agree_on_beta_and_weights(tiny_model_path, tmp_path, num_ppo_epochs):
    here = Path(__file__).parent
    env = {
        **os.environ,
        "PYTHONPATH": f"{here}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "OMP_NUM_THREADS": "1",
        "ACCELERATE_USE_CPU": "true",
    }  # accelerate's `--cpu` runs one process; torchrun + gloo on CPU runs two
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        str(here / "distributed_ppo.py"),
        tiny_model_path,
        str(tmp_path),
        str(num_ppo_epochs),
    ]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert [r["fast_path"] for r in ranks] == [num_ppo_epochs == 1] * 2  # the loss forward completes rollouts
    assert ranks[0]["steps"] == ranks[1]["steps"] == 4
    assert ranks[0]["beta"] == ranks[1]["beta"] and ranks[0]["state"] == ranks[1]["state"]
    assert ranks[0]["beta"] != 0.05, "β never moved: the controller did not run"
    assert ranks[0]["weights"] != ranks[0]["initial_weights"], "training did not change the weights"
    assert ranks[0]["weights"] == ranks[1]["weights"], "ranks diverged: gradients were not synchronised"
