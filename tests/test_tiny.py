"""The tiny-model kit: offline builds, from_pretrained round trips, determinism and caching."""

import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from trl_ppo_plus.tiny import TinySpec, tiny_model_dir


def test_round_trip_causal_lm_and_tokenizer(tiny_model_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    assert tokenizer.pad_token is not None and tokenizer.eos_token is not None
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert tokenizer.padding_side == "left"
    assert model.config.vocab_size == len(tokenizer)
    ids = tokenizer("Ann has 12 apples. #### 12", return_tensors="pt").input_ids
    assert tokenizer.decode(ids[0]) == "Ann has 12 apples. #### 12"
    out = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] == ids.shape[1] + 4 or tokenizer.eos_token_id in out[0].tolist()


def test_chat_template(tiny_model_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "2+2?"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"


def test_sequence_classifier_round_trip(tiny_model_path):
    reward = AutoModelForSequenceClassification.from_pretrained(f"{tiny_model_path}/reward")
    tokenizer = AutoTokenizer.from_pretrained(f"{tiny_model_path}/reward")
    assert reward.config.num_labels == 1
    batch = tokenizer(["a good answer", "bad"], return_tensors="pt", padding=True)
    assert reward(**batch).logits.shape == (2, 1)


def test_build_is_deterministic_and_cached(tmp_path):
    spec = TinySpec(hidden_size=32, intermediate_size=64, seed=3)
    a = tiny_model_dir(spec, cache_dir=tmp_path / "a")
    b = tiny_model_dir(spec, cache_dir=tmp_path / "b")
    wa = AutoModelForCausalLM.from_pretrained(a).state_dict()
    wb = AutoModelForCausalLM.from_pretrained(b).state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # A second call finds the cache entry and does not rebuild.
    mtime = (a / "config.json").stat().st_mtime_ns
    assert tiny_model_dir(spec, cache_dir=tmp_path / "a") == a
    assert (a / "config.json").stat().st_mtime_ns == mtime
    # A different seed is a different cache entry with different weights.
    c = tiny_model_dir(TinySpec(hidden_size=32, intermediate_size=64, seed=4), cache_dir=tmp_path / "a")
    assert c != a
    wc = AutoModelForCausalLM.from_pretrained(c).state_dict()
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_llama_family(tiny_llama_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_path)
    assert model.config.model_type == "llama"
