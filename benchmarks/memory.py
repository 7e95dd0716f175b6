"""Peak memory of one PPO step: one shared 4-bit base with adapters vs four separate full-precision models.

(a) `shared`:   `trl_ppo_plus.modeling.load_policy_and_value` — one NF4 base; LoRA adapters `policy` and `value` +
                fp32 value head; the reference is the base with the adapters off; the reward is a third (frozen) LoRA
                adapter + score head on the same base.
(b) `separate`: the TRL <= 1.12 layout — a policy, a frozen reference copy, a value model and a reward model
                (`AutoModelForSequenceClassification`), all full precision (fp32 on the CPU, bf16 on a GPU), policy and
                value trained with AdamW.

Both variants run the same `PPOTrainer` step (generate, score, rollout forwards, one optimizer step) on the same
randomly initialised, locally built model config and the same batch (`min_new_tokens` pins the completion length).
Each runs in a fresh subprocess; we read its peak RSS (`VmHWM`) on the CPU and `torch.cuda.max_memory_allocated`
on a GPU, and print the ratio shared / separate (target <= 0.25). Nothing is downloaded.

Usage:
    python benchmarks/memory.py                         # Qwen2.5-0.5B shape (24 layers, hidden 896)
    python benchmarks/memory.py --layers 4              # scaled down: fits a 24 GB CPU machine in ~minutes
    python benchmarks/memory.py --preset 7b             # GPU: Llama-7B shape, 512 + 512 tokens, batch 4

Measured (2-core CPU, 24 GB, default 0.5b shape: 494M parameters, 24 layers, batch 4, 128 + 64 tokens; `python
benchmarks/memory.py`, both variants in one run, ~25 min on a loaded machine): peak RSS shared 3.32 GiB / separate
18.48 GiB = 0.180 (above imports: 2.84 / 18.00 = 0.158); target <= 0.25. Before two fixes the same run gave 5.85 /
19.14 = 0.305: a 4-bit base no longer keeps the fp32 checkpoint memory-mapped (`load_base`: -1.5 GiB of file pages),
and `PPOTrainer` on the CPU fixes glibc's mmap threshold (`PPOConfig.cpu_malloc_mmap_threshold`, which this script
sets to 1 MiB for both variants; it is off by default because it costs CPU time), so freed activations go back to
the OS. Per phase of the shared variant, in separate probe runs (RSS high-water mark, GiB): loading 3.0-3.2 (the
copy out of the mapped checkpoint), generation 1.45, rollout forwards 1.8, PPO loss forward 1.9, loss + backward
alone 2.3. The 7b preset was not run (no GPU was available).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile


PRESETS = {
    # Qwen2.5-0.5B: 494M parameters, tied embeddings.
    "0.5b": dict(
        family="qwen2", hidden=896, layers=24, heads=14, kv_heads=2, intermediate=4864, vocab=151936,
        tie=True, batch=4, prompt_tokens=128, completion_tokens=64,
    ),
    # Llama-2-7B shape: 6.7B parameters. Target on a GPU: shared <= 12 GB peak.
    "7b": dict(
        family="llama", hidden=4096, layers=32, heads=32, kv_heads=32, intermediate=11008, vocab=32000,
        tie=False, batch=4, prompt_tokens=512, completion_tokens=512,
    ),
}  # fmt: skip


def compute_dtype():
    import torch

    return torch.bfloat16 if torch.cuda.is_available() else torch.float32


def build_from(model: str, spec: dict, root: str, variants: list[str]) -> None:
    """A pretrained checkpoint in every role: `root/policy` links to it, `root/critic` is it with a fresh 1-label
    score head (`AutoModelForSequenceClassification`), and the reward LoRA is random (`save_reward_adapter`)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    os.symlink(os.path.abspath(model), f"{root}/policy")
    tokenizer = AutoTokenizer.from_pretrained(model)
    if "separate" in variants:
        critic = AutoModelForSequenceClassification.from_pretrained(model, num_labels=1, dtype=compute_dtype())
        critic.config.pad_token_id = tokenizer.pad_token_id
        critic.save_pretrained(f"{root}/critic")
        tokenizer.save_pretrained(f"{root}/critic")
    tokenizer.save_pretrained(f"{root}/reward_adapter")
    save_reward_adapter(spec, root)
    with open(f"{root}/params.json", "w") as f:
        json.dump({"parameters": _checkpoint_parameters(model)}, f)


def _checkpoint_parameters(model: str) -> int:
    import math

    from safetensors import safe_open

    with safe_open(f"{model}/model.safetensors", "pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())


def spec_of(model: str, spec: dict) -> dict:
    """`spec` with the architecture of the checkpoint at `model` (family, sizes, vocabulary, tying)."""
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(model)
    return {**spec, "family": c.model_type, "hidden": c.hidden_size, "layers": c.num_hidden_layers,
            "heads": c.num_attention_heads, "kv_heads": c.num_key_value_heads, "intermediate": c.intermediate_size,
            "vocab": c.vocab_size, "tie": c.tie_word_embeddings}  # fmt: skip


def save_reward_adapter(spec: dict, root: str) -> None:
    """A random reward LoRA as PEFT saves a SEQ_CLS adapter: LoRA on the attention projections + the score head."""
    import torch
    from peft import LoraConfig
    from safetensors.torch import save_file

    lora = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"], task_type="SEQ_CLS")
    lora.save_pretrained(f"{root}/reward_adapter")
    head_dim = spec["hidden"] // spec["heads"]
    weights = {"base_model.model.score.weight": torch.randn(1, spec["hidden"]) * 0.02}
    for i in range(spec["layers"]):
        for proj, out in (("q_proj", spec["hidden"]), ("v_proj", spec["kv_heads"] * head_dim)):
            prefix = f"base_model.model.model.layers.{i}.self_attn.{proj}"
            weights[f"{prefix}.lora_A.weight"] = torch.randn(16, spec["hidden"]) * 0.02
            weights[f"{prefix}.lora_B.weight"] = torch.randn(out, 16) * 0.02
    save_file(weights, f"{root}/reward_adapter/adapter_model.safetensors")


def build(spec: dict, root: str, variants: list[str]) -> None:
    """Random weights for the config, saved as a causal LM (`root/policy`), a 1-label classifier (`root/critic`,
    value and reward model of the separate layout; only when that layout runs) and a random reward LoRA + score head
    (`root/reward_adapter`). The weights are drawn on the GPU when there is one (a 7B init on the CPU takes minutes)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, LlamaConfig, Qwen2Config

    from trl_ppo_plus.tiny import build_tokenizer, default_corpus

    tokenizer = build_tokenizer(default_corpus())
    config = {"qwen2": Qwen2Config, "llama": LlamaConfig}[spec["family"]](
        vocab_size=spec["vocab"], hidden_size=spec["hidden"], num_hidden_layers=spec["layers"],
        num_attention_heads=spec["heads"], num_key_value_heads=spec["kv_heads"],
        intermediate_size=spec["intermediate"], tie_word_embeddings=spec["tie"], max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=compute_dtype())
    model.save_pretrained(f"{root}/policy")
    params = sum(p.numel() for p in model.parameters())
    del model
    if "separate" in variants:
        config.num_labels = 1
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            critic = AutoModelForSequenceClassification.from_config(config, dtype=compute_dtype())
        critic.save_pretrained(f"{root}/critic")
        del critic
        tokenizer.save_pretrained(f"{root}/critic")
    for name in ("policy", "reward_adapter"):
        tokenizer.save_pretrained(f"{root}/{name}")
    save_reward_adapter(spec, root)
    with open(f"{root}/params.json", "w") as f:
        json.dump({"parameters": params}, f)


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def run_variant(variant: str, root: str, spec: dict) -> dict:
    """One PPO step of `variant` in this (fresh) process; returns its peak memory."""
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer

    from trl_ppo_plus import PPOConfig, PPOTrainer

    cuda = torch.cuda.is_available()
    tokenizer = AutoTokenizer.from_pretrained(f"{root}/policy")
    words = ("Ann has 3 apples and gets 4 more. " * spec["prompt_tokens"]).split()
    prompt_ids = tokenizer(" ".join(words))["input_ids"][: spec["prompt_tokens"]]
    prompt = tokenizer.decode(prompt_ids)
    dataset = Dataset.from_dict({"prompt": [prompt] * spec["batch"]})
    rss_before = _rss_kib("VmRSS")  # libraries imported, no model yet
    args = PPOConfig(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=spec["batch"],
        max_completion_length=spec["completion_tokens"],
        generation_kwargs={"min_new_tokens": spec["completion_tokens"]},  # the same batch shape in both variants
        max_steps=1,
        num_ppo_epochs=1,
        gradient_checkpointing=True,
        model_init_kwargs={"dtype": compute_dtype()},
        cpu_malloc_mmap_threshold=2**20,  # both variants: freed activations go back to the OS (off by default)
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
    )
    if variant == "shared":
        from trl_ppo_plus.modeling import load_policy_and_value

        model = load_policy_and_value(f"{root}/policy", reward_adapter=f"{root}/reward_adapter")
        kwargs = dict(model=model, reward_funcs=model.ppo_reward)
        args.model_init_kwargs = None
    else:
        kwargs = dict(model=f"{root}/policy", value_model=f"{root}/critic", reward_model=f"{root}/critic")
    trainer = PPOTrainer(args=args, train_dataset=dataset, processing_class=tokenizer, **kwargs)
    trainer.train()
    tokens = trainer.state.log_history[0].get("num_tokens")
    result = {
        "variant": variant,
        "peak_rss_gib": _rss_kib("VmHWM") / 2**20,
        "peak_rss_above_imports_gib": (_rss_kib("VmHWM") - rss_before) / 2**20,
        "tokens": tokens,
    }
    if cuda:
        result["cuda_max_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="0.5b")
    for name in ("layers", "hidden", "vocab", "batch", "prompt_tokens", "completion_tokens"):
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, default=None)
    parser.add_argument("--variants", default="shared,separate", help="comma-separated: shared, separate")
    parser.add_argument("--model", help="a pretrained checkpoint directory: its architecture and weights, not random")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # "<variant>:<root>": run one variant and print JSON
    args = parser.parse_args(argv)
    spec = dict(PRESETS[args.preset])
    spec.update({k: v for k, v in vars(args).items() if k in spec and v is not None})
    if args.hidden is not None:
        spec["intermediate"] = int(spec["intermediate"] * args.hidden / PRESETS[args.preset]["hidden"]) // 64 * 64
        spec["heads"] = max(1, args.hidden // 64)  # head_dim 64, as in both presets
        spec["kv_heads"] = spec["kv_heads"] if spec["heads"] % spec["kv_heads"] == 0 else 1
    if args.model:
        spec = spec_of(args.model, spec)

    if args.child:
        variant, root = args.child.split(":", 1)
        if variant == "build":
            variants = args.variants.split(",")
            build_from(args.model, spec, root, variants) if args.model else build(spec, root, variants)
            return 0
        print("RESULT " + json.dumps(run_variant(variant, root, spec)), flush=True)
        return 0

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    print(f"config: {json.dumps(spec)}")
    results = {}
    with tempfile.TemporaryDirectory() as root:
        subprocess.run([sys.executable, __file__, *(argv or sys.argv[1:]), "--child", f"build:{root}"], check=True)
        with open(f"{root}/params.json") as f:
            print(f"parameters: {json.load(f)['parameters'] / 1e6:.0f}M")
        for variant in args.variants.split(","):
            proc = subprocess.run(
                [sys.executable, __file__, *(argv or sys.argv[1:]), "--child", f"{variant}:{root}"],
                capture_output=True, text=True,
            )  # fmt: skip
            lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if not lines:
                print(f"{variant}: failed (exit {proc.returncode}; OOM?)\n{proc.stderr[-2000:]}")
                continue
            results[variant] = json.loads(lines[-1][len("RESULT ") :])
            print(f"{variant}: {json.dumps(results[variant])}")
    if {"shared", "separate"} <= results.keys():
        shared, separate = results["shared"], results["separate"]
        for key in ("peak_rss_gib", "peak_rss_above_imports_gib", "cuda_max_allocated_gib"):
            if key in shared:
                ratio = shared[key] / separate[key]
                print(f"{key}: shared {shared[key]:.2f} / separate {separate[key]:.2f} = {ratio:.3f} (target <= 0.25)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
