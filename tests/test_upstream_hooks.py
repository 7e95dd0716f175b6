"""Fails loudly when TRL changes a hook PPOTrainer / PPOConfig rely on (we pin trl>=1.16,<1.17)."""

import hashlib
import inspect

import pytest
from trl import GRPOConfig, GRPOTrainer


# name -> the parameters we call it with / override it with
HOOKS = {
    "_generate": ["self", "prompts"],
    "_calculate_rewards": ["self", "inputs", "prompts", "completions", "completion_ids_list"],
    "_generate_and_score_completions": ["self", "inputs"],
    "_compute_loss": ["self", "model", "inputs"],
    "training_step": ["self", "model", "inputs", "num_items_in_batch"],
    "_load_optimizer_and_scheduler": ["self", "checkpoint"],
    "_save": ["self", "output_dir", "state_dict"],
    "_load_from_checkpoint": ["self", "resume_from_checkpoint", "model"],
    "_prepare_inputs": ["self", "generation_batch"],
    "_save_optimizer_and_scheduler": ["self", "output_dir"],
}


@pytest.mark.parametrize("name, params", HOOKS.items())
def test_hook_signatures(name, params):
    assert list(inspect.signature(getattr(GRPOTrainer, name)).parameters) == params


def test_per_token_logps_signature():
    params = list(inspect.signature(GRPOTrainer._get_per_token_logps_and_entropies).parameters)
    assert params[:7] == [
        "self",
        "model",
        "input_ids",
        "attention_mask",
        "logits_to_keep",
        "batch_size",
        "compute_entropy",
    ]


def test_generate_returns_eight_fields():
    source = inspect.getsource(GRPOTrainer._generate)
    assert (
        "return prompt_ids, completion_ids, tool_mask, completions, logprobs, extra_fields, images, tool_images"
        in (source)
    )


def test_group_size_check_is_the_last_non_vllm_check():
    """PPOConfig accepts num_generations=1 by catching GRPOConfig's group-size error; only vLLM checks follow it."""
    source = inspect.getsource(GRPOConfig.__post_init__)
    tail = source[source.index("if self.num_generations < 2:") :]
    assert "at least 2 generations" in tail
    checked = {line.strip() for line in tail.splitlines() if line.strip().startswith("if ")}
    assert checked == {
        "if self.num_generations < 2:",
        "if self.vllm_importance_sampling_cap is not None:",
        "if (",
    }, checked
    assert hashlib.sha256(tail.encode()).hexdigest()[:12] == TAIL_SHA, "re-read GRPOConfig.__post_init__'s tail"


TAIL_SHA = "799efc6cc4e0"  # sha256 of that tail in trl 1.16.0
