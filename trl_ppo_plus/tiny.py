"""Tiny local tokenizers and models, built offline, for tests, benchmarks and the demo.

Everything here is saved with `save_pretrained` into a directory and loaded back by callers with
`AutoTokenizer.from_pretrained(path)` / `AutoModelForCausalLM.from_pretrained(path)`: the same code path a user
takes with a Hub model id, with no network.

    >>> from trl_ppo_plus.tiny import tiny_model_dir
    >>> path = tiny_model_dir()                      # built once, then cached by config hash
    >>> model = AutoModelForCausalLM.from_pretrained(path)

Builds are deterministic given the seed, and cached under `$TRL_PPO_PLUS_CACHE` (default
`~/.cache/trl_ppo_plus/tiny`), keyed by a hash of everything that determines the result.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path


PAD, EOS, BOS = "<|pad|>", "<|endoftext|>", "<|startoftext|>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [PAD, EOS, BOS, IM_START, IM_END]

# A ChatML-style template (the Qwen convention). `add_generation_prompt` opens an assistant turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_BUILD_VERSION = 1  # bump to invalidate caches when the builders change


def default_corpus(seed: int = 0, n: int = 400) -> list[str]:
    """A small English + arithmetic + Python corpus, enough for a BPE vocabulary of a few hundred tokens."""
    rng = random.Random(seed)
    names = ["Ann", "Bob", "Cara", "Dan", "Eve", "Finn", "Gus", "Hana"]
    items = ["apples", "books", "coins", "eggs", "pens", "stamps", "cards", "shells"]
    texts = []
    for _ in range(n):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        who, what = rng.choice(names), rng.choice(items)
        texts.append(f"{who} has {a} {what} and gets {b} more. How many {what} does {who} have now?")
        texts.append(f"{a} + {b} = {a + b}. {a} - {b} = {a - b}. The answer is {a + b}. #### {a + b}")
        texts.append(f"What is {a} plus {b}? Answer: \\boxed{{{a + b}}}")
    texts += [
        "def add(a, b):\n    return a + b\n",
        "def is_even(n):\n    return n % 2 == 0\n",
        "for i in range(10):\n    print(i)\n",
        "assert add(1, 2) == 3\n",
        "import sys\nprint(sys.stdin.read().strip())\n",
        "The quick brown fox jumps over the lazy dog. A good summary is short and true.",
    ]
    return texts


@dataclass(frozen=True)
class TinySpec:
    """Everything that determines a tiny build. Its hash is the cache key."""

    family: str = "qwen2"  # "qwen2" or "llama"
    vocab_size: int = 512
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 128
    max_position_embeddings: int = 512
    tie_word_embeddings: bool = False
    seed: int = 0
    corpus: tuple[str, ...] = field(default_factory=tuple)  # empty: `default_corpus(seed)`

    def key(self) -> str:
        payload = json.dumps({**asdict(self), "_v": _BUILD_VERSION}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def build_tokenizer(texts: list[str], vocab_size: int = 512):
    """Train a byte-level BPE tokenizer on `texts` and wrap it as a `PreTrainedTokenizerFast`.

    Digits are split one per token, which keeps arithmetic learnable by tiny models. It has pad, eos and bos tokens,
    a ChatML chat template, and pads on the left (what TRL's online trainers expect for generation).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        eos_token=EOS,
        bos_token=BOS,
        padding_side="left",
        model_max_length=2048,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _model_config(spec: TinySpec, tokenizer):
    from transformers import LlamaConfig, Qwen2Config

    cls = {"qwen2": Qwen2Config, "llama": LlamaConfig}.get(spec.family)
    if cls is None:
        raise ValueError(f"TinySpec.family must be 'qwen2' or 'llama', got {spec.family!r}")
    return cls(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        intermediate_size=spec.intermediate_size,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=spec.tie_word_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )


def build_tiny_models(spec: TinySpec, output_dir: str | os.PathLike) -> Path:
    """Build tokenizer, causal LM and a matching 1-label sequence classifier into `output_dir`.

    Layout: `output_dir/` holds the causal LM and tokenizer; `output_dir/reward/` holds an
    `AutoModelForSequenceClassification` (num_labels=1) with the same backbone config and tokenizer, usable as a reward
    or value model.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, GenerationConfig

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(list(spec.corpus) or default_corpus(spec.seed), spec.vocab_size)
    config = _model_config(spec, tokenizer)

    torch.manual_seed(spec.seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)

    torch.manual_seed(spec.seed + 1)
    cls_config = _model_config(spec, tokenizer)
    cls_config.num_labels = 1
    reward = AutoModelForSequenceClassification.from_config(cls_config)
    reward.save_pretrained(out / "reward")
    tokenizer.save_pretrained(out / "reward")
    return out


def tiny_model_dir(spec: TinySpec | None = None, cache_dir: str | os.PathLike | None = None, **overrides) -> Path:
    """Return a directory holding the tiny build for `spec` (plus `overrides`), building it once per config hash.

    The build goes to a temporary directory first and is renamed into place, so a crash never leaves a half-written
    cache entry, and concurrent builders (pytest-xdist, two ranks) do not clash.
    """
    spec = TinySpec(**{**asdict(spec or TinySpec()), **overrides})
    root = Path(cache_dir or os.environ.get("TRL_PPO_PLUS_CACHE", Path.home() / ".cache" / "trl_ppo_plus" / "tiny"))
    target = root / f"{spec.family}-{spec.key()}"
    if (target / "config.json").exists() and (target / "reward" / "config.json").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
    try:
        build_tiny_models(spec, tmp)
        try:
            tmp.rename(target)
        except OSError:  # somebody else finished first
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
