"""QLoRA policy + value adapters on one 4-bit base (trl_ppo_plus.modeling), on the CPU with a tiny local Qwen2."""

import os

import pytest
import torch


bnb = pytest.importorskip("bitsandbytes")
peft = pytest.importorskip("peft")

from ppo_helpers import DigitReward, fast_args, prompts_dataset  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from trl_ppo_plus import PPOConfig, PPOTrainer  # noqa: E402
from trl_ppo_plus.modeling import (  # noqa: E402
    load_base,
    load_policy_and_value,
    load_trained_policy_and_value,
    merge_policy_adapter,
    policy_and_value_from_model_config,
    save_policy_and_value,
)
from trl_ppo_plus.value import AdapterCritic, SharedTrunkCritic  # noqa: E402


IDS = torch.tensor([[5, 17, 42, 99, 7, 3, 64, 12], [8, 9, 10, 11, 12, 13, 14, 15]])
MASK = torch.ones_like(IDS)
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _perturb(model, adapter, seed):
    """LoRA B starts at zero (adapter = identity): give it random weights so the adapter changes the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if f"lora_B.{adapter}." in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)


def _linear4bit(model):
    return [m for m in model.modules() if type(m) is bnb.nn.Linear4bit]


def _outputs(model):
    """Policy logits and critic values on a fixed batch, eval mode, no grad."""
    model.eval()
    with torch.no_grad():
        return model(input_ids=IDS, attention_mask=MASK).logits, model.ppo_critic(model, IDS, MASK, 4)


def _trainable(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_layout_4bit_base_and_only_adapters_and_head_train(tiny_model_path):
    model = load_policy_and_value(tiny_model_path, lora_r=4, lora_alpha=8)
    layers = model.get_base_model().config.num_hidden_layers
    assert len(_linear4bit(model)) == layers * len(LINEARS)  # every base linear is 4-bit, the lm_head is not
    assert all(type(model.get_submodule(n).base_layer) is bnb.nn.Linear4bit for n, _ in _lora_modules(model))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    policy = [n for n in trainable if ".lora_A.policy." in n or ".lora_B.policy." in n]
    value = [n for n in trainable if ".lora_A.value." in n or ".lora_B.value." in n]
    head = [n for n in trainable if n.startswith("ppo_critic.")]
    assert len(policy) == len(value) == 2 * layers * len(LINEARS)
    assert sorted(trainable) == sorted(policy + value + head)
    assert head == ["ppo_critic.head.summary.weight", "ppo_critic.head.summary.bias"]
    assert model.ppo_critic.head.summary.weight.dtype == torch.float32
    assert isinstance(model.ppo_critic, AdapterCritic) and model.active_adapter == "policy"


def _lora_modules(model):
    return [(n, m) for n, m in model.named_modules() if hasattr(m, "lora_A") and "policy" in m.lora_A]


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="reads the process's memory maps (Linux)")
def test_4bit_base_keeps_no_view_of_the_checkpoint_file(tiny_model_path):
    # The fp32 checkpoint loads zero-copy: a norm or embedding left as a view of the mapped .safetensors keeps the
    # whole file (every weight the load quantized) resident.
    model = load_policy_and_value(tiny_model_path, lora_r=4, lora_alpha=8)
    with open("/proc/self/maps") as f:
        spans = [line.split()[0].split("-") for line in f if line.rstrip().endswith(".safetensors")]
    spans = [(int(start, 16), int(end, 16)) for start, end in spans]
    tensors = [*model.named_parameters(), *model.named_buffers()]
    assert not [name for name, t in tensors if any(start <= t.data_ptr() < end for start, end in spans)]


def test_one_base_serves_policy_value_and_reference(tiny_model_path):
    model = load_policy_and_value(tiny_model_path, lora_r=4, lora_alpha=8).eval()
    _perturb(model, "policy", 0)
    _perturb(model, "value", 1)
    seen = {"policy": [], "value": [], "reference": []}
    mode = ["policy"]
    hooks = [
        m.register_forward_hook(lambda mod, a, o: seen[mode[0]].append((id(mod), mod.weight.data_ptr())))
        for m in _linear4bit(model)
    ]
    with torch.no_grad():
        policy_logits = model(input_ids=IDS).logits
        mode[0] = "value"
        values = model.ppo_critic(model, IDS, MASK, 4)
        mode[0] = "reference"
        with model.disable_adapter():
            ref_logits = model(input_ids=IDS).logits
    for hook in hooks:
        hook.remove()
    # The same Linear4bit modules, with the same storage, run in all three roles: one base in memory.
    assert seen["policy"] == seen["value"] == seen["reference"]
    assert len(set(seen["policy"])) == len(_linear4bit(model)) == len({ptr for _, ptr in seen["policy"]})
    assert not torch.allclose(policy_logits, ref_logits)
    # Policy and value adapters give different trunks: the value head reads the value adapter's hidden states.
    head = model.ppo_critic.head
    with torch.no_grad():
        torch.nn.init.normal_(head.summary.weight)
        policy_trunk = model.get_base_model().model(input_ids=IDS).last_hidden_state[:, -5:-1]
        values = model.ppo_critic(model, IDS, MASK, 4)
    assert values.shape == (2, 4) and values.dtype == torch.float32
    assert not torch.allclose(values, head(policy_trunk))
    assert model.active_adapter == "policy"


def test_reference_logits_equal_the_adapter_free_base(tiny_model_path):
    model = load_policy_and_value(tiny_model_path, lora_r=4, lora_alpha=8).eval()
    _perturb(model, "policy", 0)
    base = load_base(tiny_model_path, "nf4", gradient_checkpointing=False).eval()  # the same 4-bit base, alone
    with torch.no_grad():
        with model.disable_adapter():
            ref = model(input_ids=IDS, attention_mask=MASK).logits
        expected = base(input_ids=IDS, attention_mask=MASK).logits
        policy = model(input_ids=IDS, attention_mask=MASK).logits
    assert torch.equal(ref, expected)
    assert not torch.allclose(policy, expected)


def test_gradient_checkpointing_replays_the_value_adapter(tiny_model_path):
    # Under checkpointing the critic's layers are recomputed in backward, after the policy adapter is back on:
    # `active_adapter` must replay them with the value adapter, or the value LoRA gets wrong gradients.
    grads = {}
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = load_policy_and_value(tiny_model_path, lora_r=4, lora_alpha=8, gradient_checkpointing=checkpointing)
        _perturb(model, "policy", 0)
        _perturb(model, "value", 1)
        torch.nn.init.normal_(model.ppo_critic.head.summary.weight, generator=torch.Generator().manual_seed(2))
        model.train()
        assert model.get_base_model().is_gradient_checkpointing == checkpointing
        model.ppo_critic(model, IDS, MASK, 4).square().sum().backward()
        grads[checkpointing] = {n: p.grad for n, p in model.named_parameters() if ".value." in n}
        assert all(p.grad is None for n, p in model.named_parameters() if ".policy." in n)
    assert all(g is not None and g.abs().sum() > 0 for g in grads[True].values())
    for name, grad in grads[False].items():
        torch.testing.assert_close(grads[True][name], grad, msg=name)


def test_ppo_trains_both_adapters_and_head_base_bytes_frozen_save_load_resume(tiny_model_path, tmp_path):
    model = load_policy_and_value(tiny_model_path, lora_r=4, lora_alpha=8)
    quantized = {
        i: (m.weight.data.clone(), m.weight.quant_state.absmax.clone()) for i, m in enumerate(_linear4bit(model))
    }
    before = _trainable(model)
    args = fast_args(tmp_path / "run", max_steps=2, save_strategy="steps", save_steps=2)
    trainer = PPOTrainer(
        model=model, reward_funcs=DigitReward(tiny_model_path), args=args, train_dataset=prompts_dataset(16)
    )
    assert trainer.ref_model is None  # the reference is the base with the adapters switched off
    assert model.ppo_critic.head.summary.weight.dtype == torch.float32  # GRPO's bf16 cast of QLoRA params undone
    trainer.train()

    expected = _outputs(model)  # eval-mode inference must not repack the shared base either
    unchanged = [n for n, p in model.named_parameters() if n in before and torch.equal(p, before[n])]
    assert not unchanged, f"not updated: {unchanged[:3]}"
    assert any(".value." in n for n in before) and any(".policy." in n for n in before)
    for i, m in enumerate(_linear4bit(model)):  # the quantized bytes of the base never move
        assert m.weight.dtype == torch.uint8
        assert torch.equal(m.weight.data, quantized[i][0]) and torch.equal(
            m.weight.quant_state.absmax, quantized[i][1]
        )

    # save -> load: identical policy logits and values, for inference and to continue training.
    trainer.save_model(str(tmp_path / "final"))
    assert {"adapter_config.json", "adapter_model.safetensors", "value_model"} <= {
        p.name for p in (tmp_path / "final").iterdir()
    }
    assert not (tmp_path / "final" / "policy").exists() and not (tmp_path / "final" / "value").exists()
    for trainable in (False, True):
        reloaded = load_trained_policy_and_value(str(tmp_path / "final"), is_trainable=trainable)
        for got, want in zip(_outputs(reloaded), expected):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-6)  # values: equal up to one float32 ulp
    base = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    plain = peft.PeftModel.from_pretrained(base, str(tmp_path / "final"))  # the policy adapter, stock PEFT
    assert plain.active_adapter == "default" and "value" not in plain.peft_config

    # resume: a fresh model (other random LoRA A) gets both adapters and the head back from the checkpoint.
    fresh = load_policy_and_value(tiny_model_path, lora_r=4, lora_alpha=8)
    assert any(not torch.equal(p, expected_p) for p, expected_p in zip(_trainable(fresh).values(), before.values()))
    resumed = PPOTrainer(
        model=fresh, reward_funcs=DigitReward(tiny_model_path), args=args, train_dataset=prompts_dataset(16)
    )
    resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-2"))
    trained = dict(model.named_parameters())
    for name, param in fresh.named_parameters():
        if name in before:
            assert torch.equal(param, trained[name]), name


def test_merged_export_loads_with_plain_from_pretrained(tiny_model_path, tmp_path):
    model = load_policy_and_value(tiny_model_path, lora_r=4, lora_alpha=8)
    _perturb(model, "policy", 0)
    save_policy_and_value(model, tmp_path / "adapters")
    merged_dir = merge_policy_adapter(tmp_path / "adapters", tiny_model_path, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    # The merge is W + BA on the fp32 base, so it matches the adapter model on that same fp32 base.
    unmerged = peft.PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_path), tmp_path / "adapters"
    )
    with torch.no_grad():
        torch.testing.assert_close(merged(IDS).logits, unmerged.eval()(IDS).logits, atol=1e-5, rtol=1e-5)


def test_trl_flags_reach_the_shared_base(tiny_model_path, tmp_path):
    from trl import ModelConfig, TrlParser

    def parse(*flags):
        argv = ["--model_name_or_path", tiny_model_path, "--output_dir", str(tmp_path), "--report_to", "none", *flags]
        return TrlParser((PPOConfig, ModelConfig)).parse_args_into_dataclasses(argv)

    training_args, model_args = parse(
        "--load_in_4bit", "--use_peft", "--lora_r", "4", "--lora_alpha", "8", "--lora_target_modules", "all-linear"
    )
    model = policy_and_value_from_model_config(model_args, training_args)
    assert len(_linear4bit(model)) > 0 and model.peft_config["policy"].r == 4 and model.peft_config["value"].r == 4
    assert _linear4bit(model)[0].weight.quant_type == "nf4"
    trainer = PPOTrainer(
        model=model, reward_funcs=DigitReward(tiny_model_path), args=training_args, train_dataset=prompts_dataset(4)
    )
    assert isinstance(trainer.critic, AdapterCritic)
    training_args, model_args = parse()
    assert policy_and_value_from_model_config(model_args, training_args) is None  # no --use_peft: the usual path
    training_args, model_args = parse("--load_in_4bit")
    with pytest.raises(ValueError, match="--use_peft"):
        policy_and_value_from_model_config(model_args, training_args)


def test_shared_value_head_has_no_value_adapter(tiny_model_path):
    model = load_policy_and_value(tiny_model_path, quantization="fp4", lora_r=4, value_head="shared")
    assert isinstance(model.ppo_critic, SharedTrunkCritic) and list(model.peft_config) == ["policy"]
    assert _linear4bit(model)[0].weight.quant_type == "fp4"
    with pytest.raises(ValueError, match="value_head"):
        load_policy_and_value(tiny_model_path, value_head="separate")


def test_reward_adapter_scores_like_its_sequence_classifier(tiny_model_path, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    # A reward model trained as a SEQ_CLS LoRA on the same base (as TRL's RewardTrainer + PEFT saves it).
    torch.manual_seed(0)
    classifier = AutoModelForSequenceClassification.from_pretrained(tiny_model_path, num_labels=1)
    rm = peft.get_peft_model(classifier, peft.LoraConfig(r=4, target_modules="all-linear", task_type="SEQ_CLS"))
    _perturb(rm, "default", 3)
    rm.save_pretrained(tmp_path / "rm")
    AutoTokenizer.from_pretrained(tiny_model_path).save_pretrained(tmp_path / "rm")

    model = load_policy_and_value(tiny_model_path, lora_r=4, reward_adapter=str(tmp_path / "rm"))
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable and not any(".reward." in n for n in trainable)
    prompts, completions = ["Ann has 3 apples", "Bob has"], [" and 4 more.", " 12 coins"]
    scores = model.ppo_reward(prompts=prompts, completions=completions)
    assert (
        model.active_adapter == "policy"
        and sorted(n for n, p in model.named_parameters() if p.requires_grad) == trainable
    )

    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    reference = peft.PeftModel.from_pretrained(
        AutoModelForSequenceClassification.from_pretrained(tiny_model_path, num_labels=1), tmp_path / "rm"
    ).eval()
    with torch.no_grad():
        want = [
            reference(**tok(p + c, return_tensors="pt", add_special_tokens=False)).logits.item()
            for p, c in zip(prompts, completions)
        ]
    # Our reward runs on the 4-bit base, the reference on the fp32 one: equal up to the NF4 quantization error.
    assert scores == pytest.approx(want, abs=0.05)
