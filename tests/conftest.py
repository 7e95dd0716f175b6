"""Shared fixtures: offline environment, tiny local models, markers."""

import os


# Set before anything imports huggingface_hub: tests never touch the network and never send telemetry.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import pytest  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running tests")
    config.addinivalue_line("markers", "gpu: needs a CUDA device; skipped without one")


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def tiny_cache_dir(tmp_path_factory):
    """Where tiny models are cached: $TRL_PPO_PLUS_CACHE if set, else one directory for the whole session."""
    return os.environ.get("TRL_PPO_PLUS_CACHE") or str(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def tiny_model_path(tiny_cache_dir):
    """Directory of a tiny Qwen2 causal LM + tokenizer; `<dir>/reward` holds a 1-label sequence classifier."""
    from trl_ppo_plus.tiny import tiny_model_dir

    return str(tiny_model_dir(cache_dir=tiny_cache_dir))


@pytest.fixture(scope="session")
def tiny_llama_path(tiny_cache_dir):
    from trl_ppo_plus.tiny import tiny_model_dir

    return str(tiny_model_dir(cache_dir=tiny_cache_dir, family="llama"))
