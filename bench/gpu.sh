#!/bin/sh
# bench/gpu.sh — the whole GPU check in one run, from the repository root, on a
# fresh GPU machine (nvcc + gcc; no bun, no network needed):
#
#   sh bench/gpu.sh [--quick]          # results under ${OUT:-bench/results/gpu}; bash works too
#
#   1. env      nvidia-smi, nvcc, gcc, python3/torch versions           -> env.txt
#   2. check    sh cuda/dev/check.sh: builds both libraries (plain gcc/nvcc
#               lines when bun is absent), runs nodevice, parity (CUDA vs the
#               CPU reference) and sample_check                          -> check.log
#   3. bench    builds cuda/dev/gpu_bench.c and times decode on OPT-125m/1.3B/
#               6.7B-shaped random models, batch 1/8/32, full vs 2x/3x/5x
#                                                                        -> bench.log, bench.json
#   4. torch    if python3 imports torch with CUDA: bench/torch_peer.py, the
#               PyTorch peer (transformers' OPT and a plain KV-cached loop),
#               and a side-by-side table                                 -> torch.log, torch.json
#   5. summary                                                           -> summary.md
#
# Every stage runs under `timeout`, each capped by what is left of the whole
# script's budget (GPU_SH_BUDGET_S, default 380 s; with the kill grace and
# the short ungated probes the worst case stays near 7 minutes, a typical run
# takes ~3). gpu_bench and torch_peer also get an internal
# --budget-s a little under their timeout, so they stop cleanly and keep their
# JSON. At most 7 files land in $OUT (the device tool returns up to 8).
# Exit status: 0 all passed, 1 a build, parity/sample check or benchmark failed
# (benchmarks still run after a failed parity check, for the numbers), 2 no
# CUDA device (stops after the check stage).
set -u
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-bench/results/gpu}
BUDGET=${GPU_SH_BUDGET_S:-380}
QUICK=""
for a in "$@"; do
    case "$a" in
    --quick) QUICK=--quick ;;
    *) echo "usage: sh bench/gpu.sh [--quick]   (env: OUT=dir, GPU_SH_BUDGET_S=380)" >&2; exit 2 ;;
    esac
done
mkdir -p "$OUT" build
T0=$(date +%s)
SUMMARY="$OUT/summary.md"
RCFILE=build/.gpu_sh_rc # exit status of a piped stage (POSIX sh has no PIPESTATUS)
: >"$SUMMARY"

elapsed() { echo $(($(date +%s) - T0)); }
# cap N: seconds a stage may take: N, or what is left of the budget if less (>= 1).
cap() {
    c=$1
    left=$((BUDGET - $(elapsed)))
    [ "$left" -lt "$c" ] && c=$left
    [ "$c" -lt 1 ] && c=1
    echo "$c"
}
say() { echo "[gpu.sh +$(elapsed)s] $*" | tee -a "$SUMMARY"; }
ran() { # ran RC TIMEOUT: describes an exit status
    if [ "$1" -eq 124 ] || [ "$1" -eq 137 ]; then echo "TIMED OUT after $2 s (rc $1)"; else echo "rc $1"; fi
}
# staged LOG TIMEOUT CMD...: runs CMD under timeout, output to the terminal and LOG; sets rc.
staged() {
    log=$1
    t=$2
    shift 2
    { timeout -k 10 "$t" "$@" 2>&1; echo $? >"$RCFILE"; } | tee -a "$log"
    rc=$(cat "$RCFILE")
}

# ---- 1. env ------------------------------------------------------------------------
gpu=$(timeout 10 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
{
    date -u
    uname -a
    timeout 10 nvidia-smi 2>&1
    timeout 10 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem,clocks.max.sm,clocks.max.mem,power.limit --format=csv 2>&1
    nvcc --version 2>&1 | tail -2
    gcc --version 2>&1 | head -1
    timeout 20 python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available())" 2>&1 | tail -1
    timeout 20 python3 -c "import transformers; print('transformers', transformers.__version__)" 2>&1 | tail -1
} >"$OUT/env.txt" 2>&1
say "env: GPU ${gpu:-none (nvidia-smi)}; $(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' | sed 's/release/nvcc/'); $(tail -2 "$OUT/env.txt" | tr '\n' ' ')"

# ---- 2. build + nodevice + parity + sample_check -----------------------------------------
# Remove old outputs so a failed build cannot leave a stale library behind.
rm -f build/libskipdecode_cpu.so build/libskipdecode_cuda.so build/nodevice build/parity build/sample_check build/gpu_bench
: >"$OUT/check.log"
t=$(cap 180)
staged "$OUT/check.log" "$t" sh cuda/dev/check.sh
check_rc=$rc
status=0
if grep -q "no GPU here" "$OUT/check.log"; then
    say "check: built; NO CUDA DEVICE ($(grep -m1 -o 'no CUDA device: [^"]*' "$OUT/check.log"))"
    say "stopped: the benchmarks need a GPU (exit 2)"
    exit 2
fi
if [ ! -f build/libskipdecode_cuda.so ] || [ ! -f build/libskipdecode_cpu.so ]; then
    say "check: BUILD FAILED ($(ran "$check_rc" "$t")); see check.log"
    exit 1
fi
parity=$(grep -E '^(OK|FAIL): [0-9]+ of [0-9]+ models failed' "$OUT/check.log" | tail -1)
sample=$(grep -E '^validation: ' "$OUT/check.log" | tail -1)
if [ "$check_rc" -ne 0 ] || ! echo "$parity" | grep -q '^OK'; then status=1; fi
say "check: $(ran "$check_rc" "$t"); parity: ${parity:-did not finish}; sample_check: ${sample:-did not run}"

# ---- 3. gpu_bench -------------------------------------------------------------------------
: >"$OUT/bench.log"
t=$(cap 30)
if ! timeout -k 5 "$t" gcc -O2 -Wall -Wextra -I cuda/include -I cuda/common cuda/dev/gpu_bench.c -o build/gpu_bench -ldl -lm \
    >>"$OUT/bench.log" 2>&1; then
    say "bench: gpu_bench did not build (see bench.log)"
    status=1
else
    # leave ~100 s for the torch peer and the summary; at most 240 s, at least 30
    t=$((BUDGET - $(elapsed) - 100))
    [ "$t" -gt 240 ] && t=240
    [ "$t" -lt 30 ] && t=30
    t=$(cap "$t")
    staged "$OUT/bench.log" "$t" build/gpu_bench $QUICK --budget-s $((t > 40 ? t - 20 : t * 2 / 3)) --out "$OUT/bench.json"
    [ "$rc" -ne 0 ] && status=1
    say "bench: $(ran "$rc" "$t"); $(grep -E '^gpu_bench: ' "$OUT/bench.log" | tail -1)"
fi

# ---- 4. the PyTorch peer ------------------------------------------------------------------
if timeout 20 python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
    t=$(cap 100)
    if [ "$t" -ge 20 ]; then
        : >"$OUT/torch.log"
        export PYTHONUNBUFFERED=1
        staged "$OUT/torch.log" "$t" python3 bench/torch_peer.py $QUICK --budget-s $((t - 15)) \
            --out "$OUT/torch.json" --compare "$OUT/bench.json"
        say "torch peer: $(ran "$rc" "$t"); $(grep -E '^torch_peer: ' "$OUT/torch.log" | tail -1)"
    else
        say "torch peer: skipped (only $t s left)"
    fi
else
    say "torch peer: skipped (python3 has no torch with CUDA here)"
fi

# ---- 5. summary ---------------------------------------------------------------------------
rm -f "$RCFILE"
say "done in $(elapsed) s; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
if [ "$status" -eq 0 ]; then say "RESULT: PASS (parity and sample_check OK, benchmarks ran)"; else say "RESULT: FAIL (see above)"; fi
exit "$status"
