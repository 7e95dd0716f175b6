"""Critics: the learned value function V(s_t) of PPO, one per token of the completion.

Three layouts, all `nn.Module`s with the same call `values = critic(policy, input_ids, attention_mask,
logits_to_keep)` → `(B, logits_to_keep)`, giving the value of the state *before* each completion token (the same
positions the policy's log-probs are read from):

- `SeparateCritic`: an `AutoModelForSequenceClassification(num_labels=1)` of its own (the TRL ≤ 1.12 layout):
  its backbone's hidden states through its `score` head, per token.
- `SharedTrunkCritic`: a scalar head on the policy's own trunk (lm-human-preferences, trlx). It reads the hidden
  states of the policy forward that computes the log-probs, so it costs no extra forward pass.
- `AdapterCritic`: a LoRA adapter named `value` on the policy's (4-bit) base plus a scalar head
  (`trl_ppo_plus.modeling`): one base in memory for policy, critic and reference.
"""

from __future__ import annotations

import contextlib
import os

import torch
from torch import nn


VALUE_HEAD_FILE = "value_head.safetensors"


class ValueHead(nn.Module):
    """fp32 `Linear(hidden_size, 1)`: hidden states `(B, T, H)` → values `(B, T)`.

    Zero-initialised so that a fresh critic predicts 0 and does not push noise into a shared trunk on the first
    updates (lm-human-preferences initialises its value head to zero).
    """

    def __init__(self, hidden_size: int):
        super().__init__()
        self.summary = nn.Linear(hidden_size, 1, dtype=torch.float32)
        nn.init.zeros_(self.summary.weight)
        nn.init.zeros_(self.summary.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.summary(hidden_states.to(self.summary.weight.dtype)).squeeze(-1)

    def save(self, directory: str | os.PathLike) -> None:
        from safetensors.torch import save_file

        os.makedirs(directory, exist_ok=True)
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, f"{directory}/{VALUE_HEAD_FILE}"
        )

    def load(self, directory: str | os.PathLike) -> None:
        from safetensors.torch import load_file

        self.load_state_dict(load_file(f"{directory}/{VALUE_HEAD_FILE}", device=str(self.summary.weight.device)))


def _backbone(model: nn.Module) -> nn.Module:
    """The transformer trunk of a HF model (`model.model` for Qwen2/Llama), through PEFT wrappers."""
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return getattr(model, model.base_model_prefix)


def completion_slice(hidden: torch.Tensor, logits_to_keep: int) -> torch.Tensor:
    """Positions whose next token is a completion token: `(B, P+C, …)` → `(B, C, …)` (hidden[t] predicts t+1)."""
    return hidden[:, -logits_to_keep - 1 : -1]


class SeparateCritic(nn.Module):
    """A separate `AutoModelForSequenceClassification(num_labels=1)` used per token, as TRL ≤ 1.12 did."""

    shares_policy_forward = False

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, policy, input_ids, attention_mask, logits_to_keep):
        hidden = _backbone(self.model)(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return self.model.score(completion_slice(hidden.last_hidden_state, logits_to_keep)).squeeze(-1).float()

    def save(self, directory: str | os.PathLike, processing_class=None) -> None:
        self.model.save_pretrained(directory)
        if processing_class is not None:
            processing_class.save_pretrained(directory)

    def load(self, directory: str | os.PathLike) -> None:
        from safetensors.torch import load_file

        state = {}
        for name in sorted(os.listdir(directory)):
            if name.endswith(".safetensors"):
                state.update(load_file(os.path.join(directory, name)))
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        missing = [k for k in missing if k not in _tied_keys(self.model)]  # tied copies are not saved
        if missing or unexpected:
            raise ValueError(
                f"The critic in {directory} does not match the value model: missing {missing[:5]} "
                f"({len(missing)} in all), unexpected {unexpected[:5]} ({len(unexpected)} in all)."
            )


def _tied_keys(model: nn.Module) -> set[str]:
    """Names of parameters that share storage with an earlier one (`save_pretrained` writes each storage once)."""
    seen, tied = set(), set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        if tensor.data_ptr() in seen:
            tied.add(name)
        seen.add(tensor.data_ptr())
    return tied


class SharedTrunkCritic(nn.Module):
    """A value head on the policy's trunk. `capture(policy)` records the trunk's hidden states during the policy
    forward; `values_from_capture` turns them into values, so log-probs and values come from one pass."""

    shares_policy_forward = True

    def __init__(self, hidden_size: int):
        super().__init__()
        self.head = ValueHead(hidden_size)

    @contextlib.contextmanager
    def capture(self, policy: nn.Module):
        captured: list[torch.Tensor] = []
        hook = _backbone(policy).register_forward_hook(
            lambda module, args, output: captured.append(output.last_hidden_state)
        )
        try:
            yield captured
        finally:
            hook.remove()

    def values_from_capture(self, captured: list[torch.Tensor], logits_to_keep: int) -> torch.Tensor:
        return self.head(completion_slice(torch.cat(captured, dim=0), logits_to_keep))

    def forward(self, policy, input_ids, attention_mask, logits_to_keep):
        with self.capture(policy) as captured:
            _backbone(policy)(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return self.values_from_capture(captured, logits_to_keep)

    def save(self, directory, processing_class=None) -> None:
        self.head.save(directory)

    def load(self, directory) -> None:
        self.head.load(directory)


class AdapterCritic(nn.Module):
    """LoRA adapter `adapter_name` on the policy's PEFT base, plus a `ValueHead`. The policy adapter is restored
    after the value forward, so callers never see the switch."""

    shares_policy_forward = False

    def __init__(self, hidden_size: int, adapter_name: str = "value", policy_adapter: str = "policy"):
        super().__init__()
        self.head = ValueHead(hidden_size)
        self.adapter_name = adapter_name
        self.policy_adapter = policy_adapter

    def forward(self, policy, input_ids, attention_mask, logits_to_keep):
        from trl_ppo_plus.modeling import active_adapter

        with active_adapter(policy, self.adapter_name, restore=self.policy_adapter):
            hidden = _backbone(policy)(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return self.head(completion_slice(hidden.last_hidden_state, logits_to_keep))

    def save(self, directory, processing_class=None, policy=None) -> None:
        """The head, and with `policy` the value adapter, at the root of `directory` (not PEFT's subfolder)."""
        from trl_ppo_plus.modeling import save_adapter

        self.head.save(directory)
        if policy is not None:
            save_adapter(policy, self.adapter_name, directory)

    def load(self, directory, policy=None) -> None:
        """The head, and with `policy` the value adapter's weights (copied into the existing adapter)."""
        from trl_ppo_plus.modeling import load_adapter_weights

        self.head.load(directory)
        if policy is not None:
            load_adapter_weights(policy, self.adapter_name, directory)


def critic_parameters(policy: nn.Module, critic: nn.Module) -> list[nn.Parameter]:
    """The trainable parameters that belong to the critic alone: its head or model, and an `AdapterCritic`'s value
    adapter on `policy`. A trunk shared with the policy is not among them."""
    params = {id(p): p for p in critic.parameters() if p.requires_grad}
    if isinstance(critic, AdapterCritic):
        params.update(
            {id(p): p for n, p in policy.named_parameters() if p.requires_grad and _of_adapter(n, critic.adapter_name)}
        )
    return list(params.values())


def _of_adapter(name: str, adapter_name: str) -> bool:
    """PEFT keys an adapter's weights by its name right after the LoRA attribute: `q_proj.lora_A.value.weight`,
    `embed_tokens.lora_embedding_A.value`, `norm.modules_to_save.value.weight`. Matching `.value.` anywhere would
    also take a policy LoRA on a module named `value` (BERT's `attention.self.value.lora_A.policy.weight`)."""
    parts = name.split(".")
    return any(
        child == adapter_name and (owner.startswith("lora_") or owner == "modules_to_save")
        for owner, child in zip(parts, parts[1:])
    )
