"""The GPU kit (`benchmarks/gpu/run.sh`) end to end on the CPU at tiny shapes: install step, imports, four parts."""

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
    assert proc.stdout.count(" exit 0 after ") == 4, proc.stdout  # every part finished in its time limit
    assert "cuda" in (tmp_path / "env.txt").read_text()  # the environment line: versions and the device

    memory = (tmp_path / "memory_7b.log").read_text()
    shared = json.loads(next(line for line in memory.splitlines() if line.startswith("shared: "))[len("shared: ") :])
    assert shared["peak_rss_gib"] > 0 and shared["tokens"] > 0

    step_time = (tmp_path / "step_time_1p5b.log").read_text()
    assert "PPO / GRPO beta=0" in step_time and "x " in step_time.split("PPO / GRPO beta=0", 1)[1]

    ppo = (tmp_path / "smollm2_ppo.log").read_text()
    result = json.loads(next(line for line in ppo.splitlines() if line.startswith("RESULT "))[len("RESULT ") :])
    assert result["steps"] == 2 and result["median_step_s"] > 0 and "tiny" in result["model"]

    learning = (tmp_path / "smollm2_learning.log").read_text()
    rows = {line.split("|")[1].strip(): line for line in learning.splitlines() if line.startswith("| ")}
    assert {"ppo", "grpo", "rloo"} <= rows.keys() and any(k.startswith("base") for k in rows), learning
    for arm in ("ppo", "grpo", "rloo"):  # one step each, equal completions, a held-out accuracy
        cells = [c.strip() for c in rows[arm].split("|")[1:-1]]
        assert cells[2] == "1" and cells[3] == "1 × 2" and cells[6].endswith("%"), rows[arm]
