#!/usr/bin/env bash
# The device check: one script, at most ~10 minutes on one H100/H200, one line per check:
#   PASS|FAIL <check> <seconds>s <detail>
# Each check has its own time limit and its log in $OUT/<check>.log. Run from the repository root on
# the GPU machine, after bench/gpu_wheels.sh filled .whl/ here (that machine reaches no package index):
#   bash bench/gpu_check.sh [OUT_DIR]
# The package runs from this checkout (PYTHONPATH=src) on the machine's own CUDA build of torch, whose
# version is printed first; nothing is installed over it.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-/tmp/gpu_check}}
mkdir -p "$OUT"
PY=${PY:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
UA=("$PY" -c "from unlearn_audit.cli import main; main()")
W=${WORKDIR:-/tmp/ua-gpu}
mkdir -p "$W"

check() {  # check NAME LIMIT_S COMMAND...: PASS when the command exits 0 within LIMIT_S
  local name=$1 limit=$2 t0 code
  shift 2
  t0=$(date +%s)
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  code=$?
  local detail
  detail=$(tail -n 1 "$OUT/$name.log" | cut -c1-200)
  if [ "$code" -eq 0 ]; then echo "PASS $name $(( $(date +%s) - t0 ))s $detail"
  elif [ "$code" -eq 124 ]; then echo "FAIL $name ${limit}s timed out"
  else echo "FAIL $name $(( $(date +%s) - t0 ))s exit $code: $detail"; fi
}

"$PY" -c "import torch, platform; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0), 'python', platform.python_version())"
check install 120 "$PY" -m pip install -q --no-index --find-links .whl --no-build-isolation \
  bitsandbytes gguf jsonschema hypothesis rouge-score

check cuda_and_bnb 60 "$PY" - <<'PY'
import torch, bitsandbytes.functional as F
assert torch.cuda.is_available(), "torch sees no CUDA device"
w = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16) * 0.02
for kind in ("fp4", "nf4"):
    q, state = F.quantize_4bit(w, blocksize=64, quant_type=kind)
    back = F.dequantize_4bit(q, state)
    err = (back.float() - w.float()).abs().max().item()
    assert back.is_cuda and 0 < err < 0.02, (kind, err)
print("bitsandbytes", __import__("bitsandbytes").__version__, "4-bit round trip on", torch.cuda.get_device_name(0))
PY

check pytest_gpu 180 bash -c "'$PY' -m pytest -m gpu -q -rs -p no:cacheprovider tests/test_gpu.py > '$OUT/pytest_gpu.txt' 2>&1; code=\$?; \
  cat '$OUT/pytest_gpu.txt'; grep -q ' skipped' '$OUT/pytest_gpu.txt' && { echo 'some gpu tests were skipped'; exit 1; }; exit \$code"

ALL=fp32,rtn-int8,rtn-int4,rtn-int4-asym,rtn-int4-pc,nf4,fp4,gguf-q8_0,gguf-q4_0,bnb-fp4,bnb-nf4,bnb-int8,gptq-int4,awq-int4
ALL=$ALL,prune-magnitude-20,prune-layer-20,noise-0.05,relearn-10
check audit_250m_every_scheme 240 "$PY" bench/scale.py --shape 250m --workdir "$W/250m" --device cuda --dtype auto --schemes "$ALL"

# The same audit twice on CUDA, and CUDA against the CPU, number by number (bench/compare_reports.py).
audit() {  # audit OUT_NAME FLAGS...: exit 0 for PASS, FAIL or INCONCLUSIVE, which are results here
  "${UA[@]}" audit "$W/250m/audited" --forget "$W/250m/forget.jsonl" --holdout "$W/250m/holdout.jsonl" \
    --original "$W/250m/original" --reference "$W/250m/reference" --format json --fresh --fail-on fail \
    --cache-dir "$W/cache-$1" --out "$W/$1" "${@:2}" >/dev/null
  local code=$?
  [ "$code" -le 1 ]
}
UA_STR="${UA[*]@Q}"
export W PY
check repeat_on_cuda_1 120 bash -c "UA=($UA_STR); $(declare -f audit); audit r1 --device cuda --dtype bfloat16 --schemes fp32,rtn-int4,nf4"
check repeat_on_cuda_2 120 bash -c "UA=($UA_STR); $(declare -f audit); audit r2 --device cuda --dtype bfloat16 --schemes fp32,rtn-int4,nf4"
check repeat_identical 30 "$PY" bench/compare_reports.py "$W/r1/report.json" "$W/r2/report.json" 0
# float32 on both: bfloat16 GEMMs differ by kernel and shape; float32 ones by summation order only.
check cuda_float32 120 bash -c "UA=($UA_STR); $(declare -f audit); audit c1 --device cuda --dtype float32 --schemes fp32,rtn-int4"
check cpu_float32 240 bash -c "UA=($UA_STR); $(declare -f audit); audit c2 --device cpu --dtype float32 --schemes fp32,rtn-int4"
check cuda_vs_cpu 30 "$PY" bench/compare_reports.py "$W/c1/report.json" "$W/c2/report.json" 0.02
rm -rf "$W/250m" "$W"/r? "$W"/c?

check scale_7b 240 "$PY" bench/scale.py --shape 7b --workdir "$W/7b" --device cuda --dtype bfloat16 --schemes fp32,rtn-int4,nf4
rm -rf "$W/7b"
check scale_8b 240 "$PY" bench/scale.py --shape 8b --workdir "$W/8b" --device cuda --dtype bfloat16 --schemes fp32,rtn-int4,nf4
rm -rf "$W/8b"
