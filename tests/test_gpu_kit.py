"""The GPU kit (`benchmarks/gpu/run.sh`) end to end on the CPU at tiny shapes: install step, imports, three parts."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_gpu_kit_runs_every_part_at_tiny_shapes(tmp_path):
    env = {**os.environ, "KIT_OUT": str(tmp_path), "PY": sys.executable}
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu" / "run.sh"), "--tiny"], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count(" exit 0 after ") == 3, proc.stdout  # every part finished in its time limit
    assert "cuda" in (tmp_path / "env.txt").read_text()  # the environment line: versions and the device

    memory = (tmp_path / "memory_7b.log").read_text()
    shared = json.loads(next(line for line in memory.splitlines() if line.startswith("shared: "))[len("shared: ") :])
    assert shared["peak_rss_gib"] > 0 and shared["tokens"] > 0

    step_time = (tmp_path / "step_time_1p5b.log").read_text()
    assert "PPO / GRPO beta=0" in step_time and "x " in step_time.split("PPO / GRPO beta=0", 1)[1]

    ppo = (tmp_path / "smollm2_ppo.log").read_text()
    result = json.loads(next(line for line in ppo.splitlines() if line.startswith("RESULT "))[len("RESULT ") :])
    assert result["steps"] == 2 and result["median_step_s"] > 0 and "tiny" in result["model"]
