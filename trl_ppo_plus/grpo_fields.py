"""What `PPOConfig` does with each field it inherits from `trl.GRPOConfig`: honoured, mapped, or refused.

Every `GRPOConfig` field is in exactly one of three tables (`tests/test_grpo_fields.py` walks
`dataclasses.fields(GRPOConfig)` and fails on a field in none, so a new TRL field cannot slip through unread):

- `HONOURED`: PPOTrainer does what GRPOTrainer does with it (generation, vLLM, data, logging are GRPO's own code).
  The fields of `transformers.TrainingArguments` are honoured by `transformers.Trainer` and not listed.
- `MAPPED`: a GRPO name for a PPO setting; `PPOConfig.__post_init__` copies it onto the PPO field.
- `REFUSED`: a GRPO loss or advantage setting with no PPO meaning. `PPOConfig` raises a `ValueError` naming the field
  and the value when it differs from PPOConfig's default, so a GRPO script never loses a setting silently.

`readme_table()` renders the three tables for the README.
"""

from __future__ import annotations


HONOURED: dict[str, str] = {
    "model_init_kwargs": "how a policy given by id or path is loaded",
    "trust_remote_code": "loading the policy and reward models",
    "disable_dropout": "dropout off in policy, critic and reference (PPOConfig default `True`: ratios need it)",
    "cast_lm_head_to_fp32": "the policy's and the reference's LM head",
    "num_generations": "completions per prompt (PPOConfig default `1`: the critic is the baseline)",
    "num_generations_eval": "completions per prompt in evaluation",
    "max_completion_length": "completion length (TRL ≤ 1.12: `response_length`)",
    "ds3_gather_for_generation": "DeepSpeed ZeRO-3 generation",
    "shuffle_dataset": "the prompt sampler",
    "pad_to_multiple_of": "padding of generation inputs",
    "generation_batch_size": "the rollout batch; must agree with `num_mini_batches` (see PPOConfig)",
    "steps_per_generation": "micro-batches per rollout; must agree with `num_mini_batches` (see PPOConfig)",
    "temperature": "sampling, and the log-probs (divided by it)",
    "top_p": "sampling",
    "top_k": "sampling",
    "min_p": "sampling",
    "generation_kwargs": "sampling",
    "chat_template_kwargs": "prompt templating",
    "repetition_penalty": "sampling",
    "cache_implementation": "generation",
    "use_transformers_continuous_batching": "generation",
    "transformers_continuous_batching_config": "generation",
    "use_transformers_paged": "generation (deprecated alias of continuous batching)",
    "use_vllm": "generation with vLLM",
    "vllm_mode": "vLLM",
    "vllm_model_impl": "vLLM",
    "vllm_enable_sleep_mode": "vLLM",
    "vllm_structured_outputs_regex": "vLLM",
    "vllm_server_base_url": "vLLM",
    "vllm_server_host": "vLLM",
    "vllm_server_port": "vLLM",
    "vllm_server_timeout": "vLLM",
    "vllm_group_port": "vLLM",
    "vllm_gpu_memory_utilization": "vLLM",
    "vllm_max_model_length": "vLLM",
    "vllm_tensor_parallel_size": "vLLM",
    "reward_weights": "the weighted sum of the reward functions (the score)",
    "mask_truncated_completions": "truncated completions get no loss (DAPO)",
    "entropy_coef": "the entropy bonus, mean per-token entropy (as GRPO)",
    "max_tool_calling_iterations": "GRPO's tool loop",
    "log_completions": "the completions table",
    "log_multimodal": "the completions table",
    "num_completions_to_print": "the completions table",
    "log_unique_prompts": "the completions table",
    "log_completions_hub_repo": "the completions table",
}

# GRPO name -> (PPOConfig field, how it maps)
MAPPED: dict[str, tuple[str, str]] = {
    "beta": ("kl_coef", "a non-zero `beta` is the initial β; GRPO's own KL term stays off"),
    "num_iterations": ("num_ppo_epochs", "passes over each rollout, when set"),
    "epsilon": ("cliprange", "clip range ε, when set"),
    "epsilon_high": ("cliprange_high", "upper clip range (DAPO clip-higher), when set"),
    "delta": (
        "dual_clip",
        "GRPO clamps the ratio at δ before the clipped min: for A < 0 the loss is capped at −δ·A, for A > 0 the clip "
        "already binds first, which is dual-clip PPO with c = δ (Ye et al. 2020), when set; δ < 1 + ε_high (where GRPO also caps A > 0) is "
        "refused",
    ),
    "loss_type": (
        "loss_aggregation",
        "`dapo`, `bnpo` → `token-mean`; `grpo` → `seq-mean-token-mean`; `dr_grpo` → `seq-mean-token-sum` (without "
        "Dr. GRPO's constant 1/max_completion_length); `cispo`, `sapo`, `luspo`, `vespo` are refused",
    ),
}

LOSS_TYPE_TO_AGGREGATION = {
    "dapo": "token-mean",
    "bnpo": "token-mean",
    "grpo": "seq-mean-token-mean",
    "dr_grpo": "seq-mean-token-sum",
}

_GROUP_ADVANTAGE = "GRPO's group advantage; PPO's advantages come from GAE (see whiten_advantages, whiten_rewards)"
_OTHER_LOSS = "a loss other than the clipped PPO objective (only with loss_type cispo/sapo/vespo/luspo)"
_VLLM_IS = (
    "PPO recomputes the rollout log-probs with the training policy, so vLLM's sampling log-probs are not used; "
    "set use_vllm=False or accept the mismatch"
)
_ADAPTIVE_ENTROPY = "adaptive entropy control (Skywork-OR1) is not implemented; use a fixed entropy_coef"

REFUSED: dict[str, str] = {
    "router_aux_loss_coef": "the PPO loss adds no Mixture-of-Experts router loss",
    "sapo_temperature_neg": _OTHER_LOSS,
    "sapo_temperature_pos": _OTHER_LOSS,
    "vespo_k_pos": _OTHER_LOSS,
    "vespo_lambda_pos": _OTHER_LOSS,
    "vespo_k_neg": _OTHER_LOSS,
    "vespo_lambda_neg": _OTHER_LOSS,
    "importance_sampling_level": "PPO's ratio is per token ('sequence' is GSPO)",
    "multi_objective_aggregation": "the score is the weighted sum of the rewards; " + _GROUP_ADVANTAGE,
    "scale_rewards": _GROUP_ADVANTAGE + " (PPOConfig default 'none')",
    "sync_ref_model": "the KL reference is fixed (TR-DPO reference syncing is not implemented)",
    "ref_model_mixup_alpha": "only with sync_ref_model",
    "ref_model_sync_steps": "only with sync_ref_model",
    "top_entropy_quantile": "high-entropy token masking is not implemented",
    "use_adaptive_entropy": _ADAPTIVE_ENTROPY,
    "entropy_coef_min": _ADAPTIVE_ENTROPY,
    "entropy_coef_max": _ADAPTIVE_ENTROPY,
    "entropy_coef_delta": _ADAPTIVE_ENTROPY,
    "entropy_target": _ADAPTIVE_ENTROPY,
    "vllm_importance_sampling_correction": _VLLM_IS + " (PPOConfig default False)",
    "vllm_importance_sampling_mode": _VLLM_IS,
    "vllm_importance_sampling_clip_max": _VLLM_IS,
    "vllm_importance_sampling_clip_min": _VLLM_IS,
    "vllm_importance_sampling_cap": _VLLM_IS,
    "off_policy_mask_threshold": "off-policy sequence masking is not implemented",
    "use_bias_correction_kl": "the KL is not reweighted by the ratio (PPOConfig default False)",
}


def _normalised(name: str, value):
    if name == "scale_rewards":  # GRPOConfig accepts booleans for it
        return {True: "group", False: "none"}.get(value, value)
    return value


def refuse_unsupported(config, defaults: dict) -> None:
    """Raise `ValueError` naming the first `REFUSED` field of `config` set away from its PPOConfig default."""
    for name, why in REFUSED.items():
        value = _normalised(name, getattr(config, name))
        if value != _normalised(name, defaults[name]):
            raise ValueError(
                f"PPOConfig.{name}={value!r} is not supported by PPOTrainer: {why}. Leave it at its default "
                f"({defaults[name]!r})."
            )


def readme_table() -> str:
    """The three tables as one Markdown table (pasted into the README; a test checks it is there)."""
    rows = ["| GRPOConfig field | PPOTrainer | what it does here |", "|---|---|---|"]
    rows += [f"| `{k}` | honoured | {v} |" for k, v in HONOURED.items()]
    rows += [f"| `{k}` | mapped → `{ppo}` | {how} |" for k, (ppo, how) in MAPPED.items()]
    rows += [f"| `{k}` | refused unless default | {why} |" for k, why in REFUSED.items()]
    return "\n".join(rows)
