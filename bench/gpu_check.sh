#!/usr/bin/env bash
# The device check: one script, at most ~10 minutes on one H100/H200, one line per check:
#   PASS|FAIL <check> <seconds>s <detail>
# Each check has its own time limit and its log in $OUT/<check>.log; the lines also go to
# $OUT/summary.txt. Run from the repository root on the GPU machine, after bench/gpu_wheels.sh filled
# .whl/ here (that machine reaches no package index):
#   GPU_CHECK_BUDGET_S=530 bash bench/gpu_check.sh [OUT_DIR]
# GPU_CHECK_BUDGET_S (optional) is the whole run's time: each check's limit is cut to what is left of
# it, and a check reached with under 5 s left is a FAIL line "not run", so a run under an outer limit
# still ends on its own with every line printed. The checks come most valuable first.
# GPU_CHECK_BIG=0 leaves out the 7b/8b shapes (their three checkpoints take minutes to write), for a
# call too short for them.
# The package runs from this checkout (PYTHONPATH=src) on the machine's own CUDA build of torch, whose
# version is printed first; nothing is installed over it.
set -uo pipefail
cd "$(dirname "$0")/.." || exit
T0=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET_S:-0}
OUT=${1:-${OUT:-/tmp/gpu_check}}
mkdir -p "$OUT"
PY=${PY:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
UA=("$PY" -c "from unlearn_audit.cli import main; main()")
W=${WORKDIR:-/tmp/ua-gpu}
mkdir -p "$W"

say() { echo "$*" | tee -a "$OUT/summary.txt"; }

check() {  # check NAME LIMIT_S COMMAND...: PASS when the command exits 0 within LIMIT_S
  local name=$1 limit=$2 asked=$2 t0 code left
  shift 2
  t0=$(date +%s)
  if [ "$BUDGET" -gt 0 ]; then
    left=$(( T0 + BUDGET - t0 ))
    if [ "$left" -lt 5 ]; then say "FAIL $name 0s not run: the run's ${BUDGET}s (GPU_CHECK_BUDGET_S) were spent"; return 1; fi
    [ "$left" -lt "$limit" ] && limit=$left
  fi
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  code=$?
  local detail
  detail=$(grep -v '^[[:space:]]*$' "$OUT/$name.log" | tail -n 1 | cut -c1-200)
  if [ "$code" -eq 0 ]; then say "PASS $name $(( $(date +%s) - t0 ))s $detail"
  elif [ "$code" -eq 124 ] && [ "$limit" -lt "$asked" ]; then
    say "FAIL $name ${limit}s timed out (its ${asked}s cut to what was left of GPU_CHECK_BUDGET_S=${BUDGET}s)"
  elif [ "$code" -eq 124 ]; then say "FAIL $name ${limit}s timed out"
  else say "FAIL $name $(( $(date +%s) - t0 ))s exit $code: $detail"; fi
  return "$code"
}

# The 7B and 8B checkpoints (bench/scale.py's three roles, 13.5 and 16.1 GB each in bfloat16) take
# minutes to generate on the CPU, one role after another in scale.py. Here each role is built by
# scale.py's own _write in a process of its own, in the background while the first checks use the
# GPU: the same files, byte for byte (seeds, shards and tokenizer are scale.py's), which scale.py then
# finds complete and reuses, so its run measures the audit alone, as before.
build_role() {  # build_role SHAPE WORKDIR ROLE: the audited role's perturbation is the one that gains from threads
  local threads=2
  [ "$3" = audited ] && threads=8
  OMP_NUM_THREADS=$threads exec "$PY" - "$@" <<'PY'
import sys, time
from pathlib import Path
sys.path.insert(0, "bench")
import scale
from unlearn_audit.benchmark.tiny import train_tokenizer

shape, workdir, role = sys.argv[1], Path(sys.argv[2]).resolve(), sys.argv[3]
t = time.perf_counter()
forget, holdout = scale._texts(4)  # scale.py's default --n 4: its tokenizer is trained on these
cfg = scale._config(shape)
seed, perturbed = scale.ROLES[role]
if not scale._complete(workdir / role):
    scale._write(workdir / role, cfg, scale._shapes(cfg), seed, perturbed, train_tokenizer(forget + holdout, vocab_size=1024))
print(f"built {shape} {role} in {time.perf_counter() - t:.0f} s")
PY
}
declare -A BUILDERS=()
start_build() {  # start_build SHAPE: the three roles under $W/SHAPE, in the background
  local role
  mkdir -p "$W/$1"
  for role in original audited reference; do
    ( build_role "$1" "$W/$1" "$role" >"$OUT/build_$1_$role.log" 2>&1 &
      child=$!
      trap 'kill $child 2>/dev/null' TERM
      wait "$child"; echo $? >"$OUT/build_$1_$role.rc" ) &
    BUILDERS[$1]+=" $!"
  done
}
stop_build() { local p; for p in ${BUILDERS[$1]:-}; do kill "$p" 2>/dev/null; done; }
wait_build() {  # wait_build SHAPE: exits 0 once all three roles are built, non-zero if one failed
  local role
  for role in original audited reference; do
    while [ ! -e "$OUT/build_$1_$role.rc" ]; do sleep 1; done
    cat "$OUT/build_$1_$role.log"
    [ "$(cat "$OUT/build_$1_$role.rc")" = 0 ] || { echo "building $1 $role failed"; return 1; }
  done
  for role in original audited reference; do tail -n 1 "$OUT/build_$1_$role.log"; done | paste -sd ';'  # the detail
}
stop_builders() { local s; for s in "${!BUILDERS[@]}"; do stop_build "$s"; done; }
trap stop_builders EXIT
export PYTHONUNBUFFERED=1

"$PY" -c "import torch, platform; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0), 'python', platform.python_version())" \
  2>&1 | tee -a "$OUT/summary.txt"
FREE=$(df -B1 --output=avail "$W" | tail -n 1 | tr -d ' ')
say "machine: $(getconf _NPROCESSORS_ONLN) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB RAM, $(( FREE / 10**9 )) GB free under $W"
{ nvidia-smi; df -h; free -g; } >"$OUT/machine.log" 2>&1

# Into the image's Python, against what it already holds; should pip find that set inconsistent, the
# packages it lacks are installed from .whl without resolving. Either way each must import.
install() {
  "$PY" -m pip install -q --no-index --find-links .whl --no-build-isolation bitsandbytes gguf jsonschema hypothesis rouge-score ||
    { echo "retrying without resolving dependencies"
      "$PY" -m pip install -q --no-index --no-deps --no-build-isolation .whl/bitsandbytes-* .whl/gguf-* .whl/jsonschema-* \
        .whl/jsonschema_specifications-* .whl/referencing-* .whl/rpds_py-* .whl/nltk-* .whl/defusedxml-* .whl/rouge_score-*; }
  "$PY" -c "import importlib.metadata as m, bitsandbytes, gguf, jsonschema, hypothesis, rouge_score.rouge_scorer
print(', '.join(f'{n} {m.version(n)}' for n in ('bitsandbytes', 'gguf', 'jsonschema', 'hypothesis', 'rouge-score')))"
}
check install 90 bash -c "PY='$PY'; $(declare -f install); install"

# Disk: 8b needs 48.2 GB, 7b 40.4 GB, the 250m audits under 3 GB. Both big shapes at once where they
# fit, else 8b now and 7b once 8b's files are removed. Seen on one H200 machine (16 cores, 64 GB free,
# 2026-12-04): the three 8b roles took 210, 287 and 211 s side by side, and the 8b audit had not ended
# after 199 s; so a late 7b build is started only with LATE_BUILD_S left of GPU_CHECK_BUDGET_S.
LATE_BUILD_S=450
NOT_BUILT=
NEED_8B=52000000000 NEED_7B=44000000000
if [ "${GPU_CHECK_BIG:-1}" = 0 ]; then LATE_7B=0 NOT_BUILT="left out (GPU_CHECK_BIG=0)"
elif [ "$FREE" -ge $(( NEED_8B + NEED_7B + 4000000000 )) ]; then start_build 8b; start_build 7b; LATE_7B=0
elif [ "$FREE" -ge "$NEED_8B" ]; then start_build 8b; LATE_7B=1
else LATE_7B=1; fi

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

check pytest_gpu 150 bash -c "'$PY' -m pytest -m gpu -q -rs -p no:cacheprovider tests/test_gpu.py > '$OUT/pytest_gpu.txt' 2>&1; code=\$?; \
  cat '$OUT/pytest_gpu.txt'; grep -q ' skipped' '$OUT/pytest_gpu.txt' && { echo 'some gpu tests were skipped'; exit 1; }; exit \$code"

scale_big() {  # scale_big SHAPE: wait for its checkpoints, then the audit at that size
  if [ ! -d "$W/$1" ]; then
    say "FAIL scale_$1 0s not run: ${NOT_BUILT:-$(( FREE / 10**9 )) GB free under $W, too little for its three checkpoints}"; return
  fi
  # The wait is its own line, so scale_<shape>'s seconds are the audit's alone.
  if check "build_$1" 300 bash -c "$(declare -f wait_build); OUT='$OUT'; wait_build $1"; then
    check "scale_$1" 240 "$PY" bench/scale.py --shape "$1" --workdir "$W/$1" --device cuda --dtype bfloat16 --schemes fp32,rtn-int4,nf4
  else say "FAIL scale_$1 0s not run: its checkpoints were not built (build_$1)"; fi
  stop_build "$1"
  rm -rf "${W:?}/$1"
}
scale_big 8b
if [ "$LATE_7B" = 1 ]; then
  FREE=$(df -B1 --output=avail "$W" | tail -n 1 | tr -d ' ')
  if [ "$BUDGET" -gt 0 ] && [ $(( T0 + BUDGET - $(date +%s) )) -lt "$LATE_BUILD_S" ]; then
    NOT_BUILT="under ${LATE_BUILD_S}s of GPU_CHECK_BUDGET_S left to build its checkpoints and audit them"
  elif [ "$FREE" -ge "$NEED_7B" ]; then start_build 7b; fi
fi
scale_big 7b

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
check repeat_on_cuda_1 90 bash -c "UA=($UA_STR); $(declare -f audit); audit r1 --device cuda --dtype bfloat16 --schemes fp32,rtn-int4,nf4"
check repeat_on_cuda_2 90 bash -c "UA=($UA_STR); $(declare -f audit); audit r2 --device cuda --dtype bfloat16 --schemes fp32,rtn-int4,nf4"
check repeat_identical 30 "$PY" bench/compare_reports.py "$W/r1/report.json" "$W/r2/report.json" 0
# float32 on both: bfloat16 GEMMs differ by kernel and shape; float32 ones by summation order only.
check cuda_float32 90 bash -c "UA=($UA_STR); $(declare -f audit); audit c1 --device cuda --dtype float32 --schemes fp32,rtn-int4"
check cpu_float32 240 bash -c "UA=($UA_STR); $(declare -f audit); audit c2 --device cpu --dtype float32 --schemes fp32,rtn-int4"
check cuda_vs_cpu 30 "$PY" bench/compare_reports.py "$W/c1/report.json" "$W/c2/report.json" 0.02
rm -rf "$W/250m" "$W"/r? "$W"/c?
say "done in $(( $(date +%s) - T0 ))s"
