"""Build the `RunInfo` of a PPOTrainer (what the model card and the Hub publisher read)."""

from __future__ import annotations

import os
import shlex
import sys

from trl_ppo_plus.model_card import RunInfo


_CARD_FIELDS = [
    "learning_rate", "value_learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps",
    "generation_batch_size", "num_generations", "max_completion_length", "temperature", "num_ppo_epochs",
    "num_mini_batches", "cliprange", "cliprange_value", "value_huber_delta", "vf_coef", "gamma", "lam", "whiten_rewards",
    "whiten_advantages", "kl_estimator", "kl_penalty", "entropy_coef", "missing_eos_penalty", "max_steps", "seed",
    "reward_normalization", "critic_warmup_rollouts", "dual_clip", "cliprange_high", "loss_aggregation", "lam_critic",
    "lam_actor_length_alpha",
]  # fmt: skip


def _reward_kind(func) -> str:
    if hasattr(func, "config"):
        return "reward_model"
    name = getattr(func, "__name__", type(func).__name__).lower()
    module = getattr(type(func), "__module__", "") + getattr(func, "__module__", "")
    if "math" in name or "rewards.math" in module:
        return "math"
    if "code" in name or "rewards.code" in module:
        return "code"
    return "custom"


def run_info_from_trainer(trainer, model_name: str | None = None, dataset_name: str | None = None) -> RunInfo:
    args = trainer.args
    policy = trainer.accelerator.unwrap_model(trainer.model)
    base = getattr(policy.config, "_name_or_path", None)
    peft_config = getattr(policy, "peft_config", None)
    qlora = None
    if peft_config:
        adapter = peft_config.get("policy") or next(iter(peft_config.values()))
        quant = getattr(policy.config, "quantization_config", None)
        qlora = {
            "quantization": getattr(quant, "bnb_4bit_quant_type", None) if quant is not None else None,
            "lora_r": adapter.r,
            "lora_alpha": adapter.lora_alpha,
            "target_modules": sorted(adapter.target_modules) if adapter.target_modules else None,
            "value_head": type(trainer.critic).__name__,
        }
        base = adapter.base_model_name_or_path or base
    evals = {}
    for entry in trainer.state.log_history:  # the latest value of each eval metric
        evals.update({k: v for k, v in entry.items() if k.startswith("eval/")})
    return RunInfo(
        model_name=model_name or os.path.basename(os.path.normpath(args.output_dir)),
        base_model=base,
        hub_model_id=args.hub_model_id,
        dataset_names=[dataset_name] if dataset_name else [],
        reward_funcs=[
            {"name": name, "weight": float(w), "kind": _reward_kind(f)}
            for name, w, f in zip(trainer.reward_func_names, trainer.reward_weights.tolist(), trainer.reward_funcs)
        ],
        ppo_config={k: getattr(args, k) for k in _CARD_FIELDS},
        kl_controller={
            "kind": args.kl_controller,
            "init_kl_coef": trainer.init_kl_coef,
            "final_kl_coef": trainer.kl_ctl.value,
            "target": args.kl_target if args.kl_controller != "fixed" else None,
            "horizon": args.kl_horizon if args.kl_controller == "adaptive" else None,
        },
        qlora=qlora,
        eval_results=[
            {
                "metric": k.removeprefix("eval/"),
                "value": v,
                "dataset_name": dataset_name or "held-out",
                "split": "eval",
            }
            for k, v in sorted(evals.items())
        ],
        command=" ".join(shlex.quote(a) for a in [os.path.basename(sys.argv[0]), *sys.argv[1:]]),
    )
