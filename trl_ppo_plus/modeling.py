"""QLoRA PPO on ONE quantized base: LoRA adapters for the policy and the critic, the reference as the base itself.

    4-bit base (NF4 + double quantization, frozen, one copy in memory)
     ├─ LoRA "policy"   the policy: generation, log-probs (the active adapter)
     ├─ LoRA "value"    trunk of the critic, + `ValueHead` (fp32 `Linear(hidden, 1)`)   → `AdapterCritic`
     ├─ LoRA "reward"   optional frozen reward model, + its score head                    → `AdapterReward`
     └─ adapters off    the reference policy (`PeftModel.disable_adapter()`): no second copy of any weight

Four bf16 7B models (policy, reference, critic, reward; TRL ≤ 1.12) need ≈ 56 GB for the weights; this needs one NF4
base (≈ 3.9 GB) plus adapters. `benchmarks/memory.py` measures it.

Checkpoint layout (`save_policy_and_value`; `PPOTrainer.save_model` and its checkpoints write the same):

    output_dir/adapter_config.json, adapter_model.safetensors     the policy: PeftModel.from_pretrained(base, output_dir)
    output_dir/value_model/adapter_config.json, adapter_model.safetensors, value_head.safetensors    the critic

bitsandbytes and peft are imported lazily (only when a 4-bit model or an adapter is built).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import json
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from trl_ppo_plus.value import AdapterCritic, SharedTrunkCritic, ValueHead, _backbone


POLICY_ADAPTER, VALUE_ADAPTER, REWARD_ADAPTER = "policy", "value", "reward"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
VALUE_HEADS = ("adapter", "shared")


def default_compute_dtype() -> torch.dtype:
    """bf16 on a GPU that has it (the QLoRA recipe), else fp32 (CPU matmuls in bf16 are slow and lossy)."""
    return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32


def quantization_config(quantization, compute_dtype: torch.dtype):
    """`"nf4"` / `"fp4"` → a 4-bit `BitsAndBytesConfig` with double quantization; `None` → None; a config as is."""
    if quantization is None or not isinstance(quantization, str):
        return quantization
    if quantization not in ("nf4", "fp4"):
        raise ValueError(f"quantization={quantization!r} is invalid: use 'nf4', 'fp4' or None")
    from transformers.utils import is_bitsandbytes_available

    if not is_bitsandbytes_available():
        raise ImportError(
            "4-bit loading needs bitsandbytes: `pip install 'bitsandbytes>=0.45'` (or quantization=None)"
        )
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quantization,
        bnb_4bit_use_double_quant=True,  # quantize the block scales too: ≈ 4.13 bits/weight (QLoRA, arXiv:2305.14314)
        bnb_4bit_compute_dtype=compute_dtype,
    )


def load_base(
    model_name_or_path, quantization="nf4", gradient_checkpointing=True, dtype=None, device_map=None, **init_kwargs
):
    """The frozen base, quantized and prepared for k-bit training (`prepare_model_for_kbit_training`: freeze, norms
    and embeddings in fp32, gradient checkpointing with input gradients)."""
    from transformers import AutoModelForCausalLM

    dtype = dtype or default_compute_dtype()
    qconfig = quantization_config(quantization, dtype)
    model = AutoModelForCausalLM.from_pretrained(
        model_name_or_path, quantization_config=qconfig, dtype=dtype, device_map=device_map, **init_kwargs
    )
    for module in model.modules():  # bitsandbytes repacks 4-bit weights in place for eval-mode CPU inference (AVX512
        if hasattr(module, "support_avx512bf16_for_cpu"):  # BF16); training on repacked weights then fails, and the
            module.support_avx512bf16_for_cpu = False  # base is shared by every role: keep one layout
    checkpointing = {"use_reentrant": False}  # layers recomputed in backward keep their adapter (`active_adapter`)
    if qconfig is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gradient_checkpointing, gradient_checkpointing_kwargs=checkpointing
        )
        _release_checkpoint_file(model)
        return model
    model.requires_grad_(False)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(checkpointing)
        model.enable_input_require_grads()
    return model


def _release_checkpoint_file(model) -> None:
    """Copy the parameters and buffers that are still views of the checkpoint's memory map into memory of their own.

    Weights stored in the compute dtype (an fp32 checkpoint on the CPU) load zero-copy: the embeddings, norms and
    biases of a 4-bit base stay views of the mapped `.safetensors` file. One view keeps the whole mapping alive, and
    every page of it that was ever read — all the full-precision weights the load quantized — counts in the resident
    memory: ≈ 2 GB for Qwen2.5-0.5B in fp32, against ≈ 0.55 GB for its copied embeddings.
    """
    for tensor in itertools.chain(model.parameters(), model.buffers()):  # tied weights are one Parameter: one copy
        if tensor.device.type == "cpu" and not tensor.untyped_storage().resizable():  # not allocated by torch: mmap
            tensor.data = tensor.data.clone()


def lora_config(r=16, alpha=32, dropout=0.0, target_modules="all-linear"):
    from peft import LoraConfig

    return LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules, bias="none", task_type="CAUSAL_LM"
    )


def load_policy_and_value(
    model_name_or_path,
    quantization="nf4",
    lora_r: int = 16,
    lora_alpha: int = 32,
    lora_dropout: float = 0.0,
    lora_target_modules="all-linear",
    value_head: str = "adapter",
    reward_adapter=None,
    gradient_checkpointing: bool = True,
    dtype: torch.dtype | None = None,
    device_map=None,
    lora: object | None = None,
    **init_kwargs,
):
    """Load one (4-bit) base with the policy and value adapters; pass the result to `PPOTrainer(model=...)`.

    Args:
        quantization: `"nf4"` (default), `"fp4"`, `None` (full-precision base) or a `BitsAndBytesConfig`.
        lora_r, lora_alpha, lora_dropout, lora_target_modules: the LoRA of both adapters (`lora`, a full
            `peft.LoraConfig`, overrides them). `lora_target_modules=None` takes PEFT's default for the architecture.
        value_head: `"adapter"`: the critic is LoRA adapter `value` + a scalar head. `"shared"`: the head sits on
            the policy's own trunk (lm-human-preferences, trlx): no value adapter, no extra forward pass.
        reward_adapter: directory of a trained reward-model LoRA + score head (`load_reward_adapter`).
        dtype: compute dtype; `None`: bf16 on a GPU, fp32 on the CPU.

    Returns a `peft.PeftModel`, shaped as follows:

    - adapters `"policy"` (active, trainable) and `"value"` (trainable; absent with `value_head="shared"`) on one
      base, whose linears are `bitsandbytes.nn.Linear4bit` when quantized, frozen;
    - `model.ppo_critic`: an `AdapterCritic` (or `SharedTrunkCritic`), a submodule, so the trainer's optimizer,
      `.to()` and DDP see its fp32 `ValueHead`;
    - `model.ppo_reward`: with `reward_adapter`, an `AdapterReward`: pass it in `reward_funcs`.

    The reference policy is `model.disable_adapter()`, which `PPOTrainer` uses when `ref_adapter_name` is None.

    ```python
    >>> model = load_policy_and_value("Qwen/Qwen2.5-0.5B-Instruct", reward_adapter="my-reward-lora")
    >>> trainer = PPOTrainer(model=model, reward_funcs=model.ppo_reward, args=PPOConfig(...), train_dataset=ds)
    ```
    """
    from peft import get_peft_model

    if value_head not in VALUE_HEADS:
        raise ValueError(f"value_head={value_head!r} is invalid: use one of {VALUE_HEADS}")
    base = load_base(model_name_or_path, quantization, gradient_checkpointing, dtype, device_map, **init_kwargs)
    lora = lora or lora_config(lora_r, lora_alpha, lora_dropout, lora_target_modules)
    model = get_peft_model(base, copy.deepcopy(lora), adapter_name=POLICY_ADAPTER)
    hidden_size = base.config.get_text_config().hidden_size
    if value_head == "adapter":
        model.add_adapter(VALUE_ADAPTER, copy.deepcopy(lora))
        critic = AdapterCritic(hidden_size, VALUE_ADAPTER, POLICY_ADAPTER)
    else:
        critic = SharedTrunkCritic(hidden_size)
    model.set_adapter(POLICY_ADAPTER)
    _set_trainable(model)
    attach_critic(model, critic)
    if reward_adapter is not None:
        model.ppo_reward = load_reward_adapter(model, reward_adapter)
    return model


def policy_and_value_from_model_config(model_args, training_args, **kwargs):
    """TRL's flags (`--load_in_4bit --use_peft --lora_r ...`, a `trl.ModelConfig`) → `load_policy_and_value`.

    The quantization comes from `trl.get_quantization_config`, the LoRA from `trl.get_peft_config`. The compute dtype
    follows the trainer's precision (`--bf16` / `--fp16`, else fp32), since ModelConfig's `--dtype` defaults to
    float32. Returns `None` without `--use_peft` (pass the model id to `PPOTrainer` as usual); pass the returned
    model to `PPOTrainer` *without* `peft_config`.
    """
    from trl import get_peft_config, get_quantization_config

    if model_args.load_in_8bit:
        raise ValueError("--load_in_8bit is not supported by the shared-base PPO layout: use --load_in_4bit")
    if not model_args.use_peft:
        if model_args.load_in_4bit:
            raise ValueError("--load_in_4bit needs --use_peft: a 4-bit base is frozen, only adapters can train")
        return None
    dtype = torch.bfloat16 if training_args.bf16 else torch.float16 if training_args.fp16 else torch.float32
    qconfig = get_quantization_config(model_args)
    device_map = None
    if qconfig is not None:
        qconfig.bnb_4bit_compute_dtype = dtype
        if torch.cuda.is_available():
            from accelerate import PartialState

            device_map = {"": PartialState().local_process_index}  # one whole 4-bit copy per process (DDP)
    init_kwargs = {"revision": model_args.model_revision, "trust_remote_code": training_args.trust_remote_code}
    if model_args.attn_implementation is not None:
        init_kwargs["attn_implementation"] = model_args.attn_implementation
    return load_policy_and_value(
        model_args.model_name_or_path,
        quantization=qconfig,
        lora=get_peft_config(model_args),
        gradient_checkpointing=training_args.gradient_checkpointing,
        dtype=dtype,
        device_map=device_map,
        **init_kwargs,
        **kwargs,
    )


# ---------------------------------------------------------------------- adapters and trainability
def trainable_adapters(model) -> list[str]:
    """Adapters created for training (`inference_mode=False`): policy and value, not a loaded reward adapter."""
    return [name for name, config in model.peft_config.items() if not config.inference_mode]


def _set_trainable(model) -> None:
    # PEFT freezes every adapter but the active one on `set_adapter`, `add_adapter` and after `disable_adapter()`.
    model.set_requires_grad(trainable_adapters(model), True)


def attach_critic(model, critic: nn.Module) -> nn.Module:
    from trl_ppo_plus.checkpointing import CRITIC_ATTR

    device = next(p.device for p in model.parameters())
    model.add_module(CRITIC_ATTR, critic.to(device))
    return model


def restore_trainable_dtypes(model) -> None:
    """Undo GRPOTrainer's bf16 cast of a quantized model's trainable parameters where it does not fit: LoRA weights
    follow the base's compute dtype (bf16 on a GPU: unchanged; fp32 on the CPU), value heads stay fp32."""
    compute = _compute_dtype(model)
    for name, param in model.named_parameters():
        if compute is not None and "lora_" in name and param.requires_grad and param.dtype != compute:
            param.data = param.data.to(compute)
    for module in model.modules():
        if isinstance(module, ValueHead):
            module.float()


def _compute_dtype(model) -> torch.dtype | None:
    bnb = (m for m in model.modules() if type(m).__module__.startswith("bitsandbytes") and hasattr(m, "compute_dtype"))
    return next((m.compute_dtype for m in bnb), None)


@contextlib.contextmanager
def active_adapter(model, adapter_name: str, restore: str | None = None):
    """Run the block with LoRA adapter `adapter_name` active, then activate `restore` (default: the one before).

    Two things PEFT's `set_adapter` does not do:
    1. Trainable adapters stay trainable: `set_adapter` turns `requires_grad` off for every other adapter.
    2. Under gradient checkpointing, the layers recomputed in backward — after the switch back — run with the
       adapter of *this* forward: each checkpointed layer's checkpoint function is wrapped so its replay
       re-activates `adapter_name` on that layer's LoRA modules only.
    """
    previous = model.active_adapter if restore is None else restore
    _switch(model, adapter_name)
    pinned = _pin_checkpointed_layers(model, adapter_name)
    try:
        yield model
    finally:
        for layer, checkpoint_fn in pinned:
            layer._gradient_checkpointing_func = checkpoint_fn
        _switch(model, previous)


def _switch(model, adapter_name: str) -> None:
    model.set_adapter(adapter_name)
    _set_trainable(model)


def _pin_checkpointed_layers(model, adapter_name: str) -> list:
    from peft.tuners.tuners_utils import BaseTunerLayer

    pinned = []
    for layer in model.modules():
        checkpoint_fn = layer.__dict__.get("_gradient_checkpointing_func")
        if checkpoint_fn is None or not getattr(layer, "gradient_checkpointing", False):
            continue
        tuners = [m for m in layer.modules() if isinstance(m, BaseTunerLayer)]
        if tuners:
            layer._gradient_checkpointing_func = _with_adapter(checkpoint_fn, tuners, adapter_name)
            pinned.append((layer, checkpoint_fn))
    return pinned


def _with_adapter(checkpoint_fn, tuners: list, adapter_name: str):
    def checkpoint(function, *args, **kwargs):
        def run(*a, **k):  # the forward *and* its replay in backward
            with _tuners_using(tuners, adapter_name):
                return function(*a, **k)

        return checkpoint_fn(run, *args, **kwargs)

    return checkpoint


@contextlib.contextmanager
def _tuners_using(tuners: list, adapter_name: str):
    previous = [t.active_adapter for t in tuners]
    flags = [(p, p.requires_grad) for t in tuners for p in t.parameters()]
    for tuner in tuners:
        tuner.set_adapter(adapter_name)
    for param, flag in flags:
        param.requires_grad_(flag)
    try:
        yield
    finally:
        for tuner, name in zip(tuners, previous):
            tuner.set_adapter(name)
        for param, flag in flags:
            param.requires_grad_(flag)


# ---------------------------------------------------------------------- save, load, merge
def is_policy_and_value(model) -> bool:
    """Whether `model` has this module's layout (a `PeftModel` with a `policy` adapter)."""
    return POLICY_ADAPTER in (getattr(model, "peft_config", None) or {})


def save_adapter(model, adapter_name: str, directory) -> None:
    """Write one adapter at the root of `directory` (PEFT puts every adapter but "default" in a subfolder)."""
    os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        model.save_pretrained(tmp, selected_adapters=[adapter_name])
        source = tmp if adapter_name == "default" else os.path.join(tmp, adapter_name)
        for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
            os.replace(os.path.join(source, name), os.path.join(directory, name))


def load_adapter_weights(model, adapter_name: str, directory) -> None:
    """Copy saved LoRA weights into the existing adapter `adapter_name` (same parameters: the optimizer keeps them)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = load_file(os.path.join(directory, ADAPTER_WEIGHTS))
    result = set_peft_model_state_dict(model, state, adapter_name=adapter_name)
    if result.unexpected_keys:
        raise ValueError(
            f"{directory}: weights that fit no parameter of adapter {adapter_name!r}: {result.unexpected_keys[:3]}"
        )


def save_policy_and_value(model, output_dir, critic: nn.Module | None = None, processing_class=None) -> None:
    """The checkpoint layout of the module docstring. Subfolders PEFT's own `save_pretrained` wrote for the
    adapters (`output_dir/policy/`, `output_dir/value/` …) are removed: the root holds the policy."""
    import shutil

    from trl_ppo_plus.checkpointing import CRITIC_ATTR, VALUE_MODEL_DIR

    critic = critic if critic is not None else getattr(model, CRITIC_ATTR)
    save_adapter(model, POLICY_ADAPTER, output_dir)
    value_dir = os.path.join(output_dir, VALUE_MODEL_DIR)
    if isinstance(critic, AdapterCritic):
        critic.save(value_dir, policy=model)
    else:
        critic.save(value_dir)
    for name in (POLICY_ADAPTER, VALUE_ADAPTER):  # only the subfolders PEFT writes for our trained adapters: a user's
        if os.path.isfile(os.path.join(output_dir, name, ADAPTER_CONFIG)):  # reward adapter dir there stays intact
            shutil.rmtree(os.path.join(output_dir, name))
    if processing_class is not None:
        processing_class.save_pretrained(output_dir)


def load_policy_and_value_weights(model, checkpoint) -> None:
    """Resume: the policy adapter, the value adapter and the head from a checkpoint, into `model` in place."""
    from trl_ppo_plus.checkpointing import CRITIC_ATTR, VALUE_MODEL_DIR

    load_adapter_weights(model, POLICY_ADAPTER, checkpoint)
    critic = getattr(model, CRITIC_ATTR)
    value_dir = os.path.join(checkpoint, VALUE_MODEL_DIR)
    if isinstance(critic, AdapterCritic):
        critic.load(value_dir, policy=model)
    else:
        critic.load(value_dir)


def load_trained_policy_and_value(
    output_dir,
    base_model_name_or_path=None,
    quantization="nf4",
    is_trainable=True,
    gradient_checkpointing=True,
    dtype=None,
    device_map=None,
    reward_adapter=None,
    **init_kwargs,
):
    """Reload what `save_policy_and_value` (or `PPOTrainer.save_model`) wrote: the same shape as
    `load_policy_and_value` returns, to continue training (`is_trainable=True`) or for inference (frozen, eval)."""
    from peft import PeftModel

    from trl_ppo_plus.checkpointing import VALUE_MODEL_DIR

    with open(os.path.join(output_dir, ADAPTER_CONFIG)) as f:
        base_path = base_model_name_or_path or json.load(f)["base_model_name_or_path"]
    checkpointing = gradient_checkpointing and is_trainable
    base = load_base(base_path, quantization, checkpointing, dtype, device_map, **init_kwargs)
    model = PeftModel.from_pretrained(base, output_dir, adapter_name=POLICY_ADAPTER, is_trainable=is_trainable)
    value_dir = os.path.join(output_dir, VALUE_MODEL_DIR)
    hidden_size = base.config.get_text_config().hidden_size
    if os.path.isfile(os.path.join(value_dir, ADAPTER_CONFIG)):
        model.load_adapter(value_dir, adapter_name=VALUE_ADAPTER, is_trainable=is_trainable)
        critic = AdapterCritic(hidden_size, VALUE_ADAPTER, POLICY_ADAPTER)
    else:
        critic = SharedTrunkCritic(hidden_size)
    model.set_adapter(POLICY_ADAPTER)
    _set_trainable(model)
    restore_trainable_dtypes(model)  # adapters saved in bf16 by a GPU run compute in the base's compute dtype
    attach_critic(model, critic)
    critic.head.load(value_dir)
    if reward_adapter is not None:
        model.ppo_reward = load_reward_adapter(model, reward_adapter)
    if not is_trainable:
        model.eval()
        critic.requires_grad_(False)
    return model


def merge_policy_adapter(output_dir, base_model_name_or_path, out_dir, dtype: torch.dtype = torch.float32) -> Path:
    """Merge the policy adapter into a full-precision copy of the base and save it to `out_dir`, loadable with a
    plain `AutoModelForCausalLM.from_pretrained(out_dir)` (for publishing).

    The merge uses the original full-precision base weights (W + BA), the usual QLoRA export. The trained model
    computed with the 4-bit dequantized W, so the export differs from it by the quantization error of W.
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(base_model_name_or_path, dtype=dtype)
    merged = PeftModel.from_pretrained(base, output_dir).merge_and_unload()
    merged.save_pretrained(out_dir)
    for source in (output_dir, base_model_name_or_path):
        with contextlib.suppress(OSError, ValueError):
            AutoTokenizer.from_pretrained(source).save_pretrained(out_dir)
            break
    return Path(out_dir)


# ---------------------------------------------------------------------- a reward model as a third adapter
class AdapterReward:
    """A reward function that scores prompt + completion with a frozen reward LoRA on the shared base.

    Called as GRPO calls reward functions, `reward(prompts=, completions=, **kwargs) -> list[float]`: the text is
    prompt + completion (the chat template for conversational data), the score is `score_head` on the last token's
    hidden state with adapter `adapter_name` active (as `AutoModelForSequenceClassification` pools). The policy
    adapter is active again afterwards.
    """

    def __init__(self, model, score_head: nn.Linear, tokenizer, adapter_name: str = REWARD_ADAPTER):
        self.model, self.score_head, self.tokenizer, self.adapter_name = model, score_head, tokenizer, adapter_name
        self.__name__ = f"{adapter_name}_adapter"

    def _text(self, prompt, completion) -> str:
        if isinstance(completion, list):  # conversational: lists of messages
            return self.tokenizer.apply_chat_template(prompt + completion, tokenize=False)
        return prompt + completion

    @torch.no_grad()
    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        texts = [self._text(p, c) for p, c in zip(prompts, completions)]
        device = self.score_head.weight.device
        batch = self.tokenizer(
            texts, padding=True, padding_side="right", add_special_tokens=False, return_tensors="pt"
        )
        batch = batch.to(device)
        was_training = self.model.training
        self.model.eval()  # no dropout in the reward
        try:
            with active_adapter(self.model, self.adapter_name):
                hidden = _backbone(self.model)(**batch, use_cache=False).last_hidden_state  # (B, T, H)
        finally:
            self.model.train(was_training)
        last = batch["attention_mask"].sum(1) - 1  # (B,) right padding: the last real token
        pooled = hidden[torch.arange(hidden.size(0), device=device), last]  # (B, H)
        return self.score_head(pooled.to(self.score_head.weight.dtype)).squeeze(-1).float().tolist()


def load_reward_adapter(model, directory, adapter_name: str = REWARD_ADAPTER, tokenizer=None) -> AdapterReward:
    """Load a reward model trained as a LoRA on this base (e.g. TRL's RewardTrainer with a `SEQ_CLS` LoraConfig,
    saved with `save_pretrained`): its LoRA becomes frozen adapter `adapter_name`, its `score` weights (saved by
    PEFT as a module to save) the head. The tokenizer is read from `directory`, else from the base."""
    from peft import PeftConfig
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    config = PeftConfig.from_pretrained(directory)
    config = dataclasses.replace(config, task_type="CAUSAL_LM", modules_to_save=None, inference_mode=True)
    state = load_file(os.path.join(directory, ADAPTER_WEIGHTS))
    score = {k.rsplit("score.", 1)[1].replace("modules_to_save.", ""): v for k, v in state.items() if "score." in k}
    if "weight" not in score:
        raise ValueError(f"{directory} has no score head (no '*score.weight' in {ADAPTER_WEIGHTS})")
    model.add_adapter(adapter_name, config)
    with tempfile.TemporaryDirectory() as tmp:  # only the LoRA weights go into the adapter
        from safetensors.torch import save_file

        save_file({k: v for k, v in state.items() if "score." not in k}, os.path.join(tmp, ADAPTER_WEIGHTS))
        load_adapter_weights(model, adapter_name, tmp)
    model.set_requires_grad(adapter_name, False)
    _set_trainable(model)
    head = nn.Linear(score["weight"].shape[1], score["weight"].shape[0], bias="bias" in score, dtype=torch.float32)
    head.load_state_dict({k: v.float() for k, v in score.items()})
    head.requires_grad_(False)
    head.to(next(p.device for p in model.parameters()))
    if tokenizer is None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(directory)
        except (OSError, ValueError):
            tokenizer = AutoTokenizer.from_pretrained(model.peft_config[adapter_name].base_model_name_or_path)
    return AdapterReward(model, head, tokenizer, adapter_name)


__all__ = [
    "AdapterReward",
    "active_adapter",
    "load_policy_and_value",
    "load_reward_adapter",
    "load_trained_policy_and_value",
    "merge_policy_adapter",
    "policy_and_value_from_model_config",
    "save_policy_and_value",
]
