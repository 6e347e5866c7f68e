#!/bin/sh
# bench/gpu.sh — the whole GPU check in one run, from the repository root, on a
# fresh GPU machine (nvcc + gcc; no bun or network needed):
#
#   sh bench/gpu.sh [--quick] [--prebuilt] [--no-peer] [--static-peer] [--old] [--new-kernels]
#                                       # results under ${OUT:-bench/results/gpu}
#
#   --new-kernels  stages 3 and 5 run with the kernels that are not yet the
#                  defaults switched on (SKIPDECODE_CUDA_GEMM=tc, _ATTN=tiled,
#                  _GRAPHS=1); the checks of stage 2 always cover every variant
#
#   1. env      nvidia-smi, nvcc, gcc, python3/torch versions           -> env.txt
#   2. check    sh cuda/dev/check.sh: builds both libraries and the harnesses
#               (--prebuilt: uses what build/ already holds), runs nodevice,
#               parity (CUDA vs the CPU engine) under every kernel variant,
#               sample_check, and gemm_check (every GEMM variant on real
#               shapes vs float64, timed)                                -> check.log
#   3. bench    cuda/dev/gpu_bench.c with the library's default kernels:
#               decode on OPT-125m/1.3B/6.7B-shaped random models, batch
#               1/8/32, full vs 2x/3x/5x; then long context: opt-1.3b batch 1
#               at prompt 128 and 2048 (prefill of one 2048-token prompt);
#               with --old also the first kernels (SIMT GEMMs, simple
#               attention, no graphs) and each new switch alone, on 125m and
#               1.3b at batch 1 and 32, full and 3x                      -> bench.log, bench.json
#   4. torch    if python3 imports torch with CUDA (and not --no-peer):
#               bench/torch_peer.py, the PyTorch peer (transformers' OPT and
#               a plain KV-cached loop; --static-peer adds transformers'
#               static-cache compiled generate() on opt-1.3b) side by side
#                                                                        -> torch.log
#   5. tests    if bun is at $BUN (or .device/bun.xz, unpacked): bun test
#               test/cuda.test.ts                                       -> cuda-test.log
#   6. summary                                                           -> summary.md
#
# It never changes a default: which kernel is the default is a #define in
# cuda/gpu/engine.cu, flipped by hand after a run like this proves parity.
# Every stage runs under `timeout`, capped by what is left of the budget
# (GPU_SH_BUDGET_S, default 420 s). At most 8 files land in $OUT.
# Exit status: 0 all passed, 1 a build, check or benchmark failed, 2 no CUDA device.
set -u
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-bench/results/gpu}
BUDGET=${GPU_SH_BUDGET_S:-420}
QUICK="" PREBUILT="" PEER=1 STATIC="" OLD="" NEW=""
for a in "$@"; do
    case "$a" in
    --quick) QUICK=--quick ;;
    --prebuilt) PREBUILT=1 ;;
    --no-peer) PEER="" ;;
    --static-peer) STATIC=1 ;;
    --old) OLD=1 ;;
    --new-kernels) NEW=1 ;;
    *) echo "usage: sh bench/gpu.sh [--quick] [--prebuilt] [--no-peer] [--static-peer] [--old] [--new-kernels]   (env: OUT=dir, GPU_SH_BUDGET_S=420, BUN=path)" >&2; exit 2 ;;
    esac
done
mkdir -p "$OUT" build
T0=$(date +%s)
SUMMARY="$OUT/summary.md"
RCFILE=build/.gpu_sh_rc
: >"$SUMMARY"

elapsed() { echo $(($(date +%s) - T0)); }
cap() {
    c=$1
    left=$((BUDGET - $(elapsed)))
    [ "$left" -lt "$c" ] && c=$left
    [ "$c" -lt 1 ] && c=1
    echo "$c"
}
say() { echo "[gpu.sh +$(elapsed)s] $*" | tee -a "$SUMMARY"; }
ran() { if [ "$1" -eq 124 ] || [ "$1" -eq 137 ]; then echo "TIMED OUT after $2 s (rc $1)"; else echo "rc $1"; fi; }
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
    env | grep '^SKIPDECODE_' || echo "no SKIPDECODE_* variables: the library's default kernels"
} >"$OUT/env.txt" 2>&1
say "env: GPU ${gpu:-none (nvidia-smi)}; $(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' | sed 's/release/nvcc/')"

# ---- 2. build + checks ------------------------------------------------------------------
if [ -z "$PREBUILT" ]; then
    rm -f build/libskipdecode_cpu.so build/libskipdecode_cuda.so build/nodevice build/parity build/sample_check \
        build/gemm_check build/gpu_bench
else
    export SKD_PREBUILT=1
fi
: >"$OUT/check.log"
[ -n "$QUICK" ] && export GEMM_CHECK_FLAGS=--quick
staged "$OUT/check.log" "$(cap 200)" sh cuda/dev/check.sh
check_rc=$rc
if grep -q "no GPU here" "$OUT/check.log"; then
    say "check: built; NO CUDA DEVICE — the benchmarks need a GPU (exit 2)"
    exit 2
fi
if [ ! -f build/libskipdecode_cuda.so ] || [ ! -f build/libskipdecode_cpu.so ]; then
    say "check: BUILD FAILED ($(ran "$check_rc" 200)); see check.log"
    exit 1
fi
status=0
[ "$check_rc" -ne 0 ] && status=1
say "check: $(ran "$check_rc" 200)"
grep -E '^(OK|FAIL): [0-9]+ of [0-9]+ models failed|^validation: |^(OK|FAIL): [0-9]+ failed checks' "$OUT/check.log" |
    sed 's/^/    /' | tee -a "$SUMMARY"

# ---- 3. gpu_bench ------------------------------------------------------------------------
: >"$OUT/bench.log"
if [ -n "$NEW" ]; then
    export SKIPDECODE_CUDA_GEMM=tc SKIPDECODE_CUDA_ATTN=tiled SKIPDECODE_CUDA_GRAPHS=1
    say "bench and tests with: SKIPDECODE_CUDA_GEMM=tc SKIPDECODE_CUDA_ATTN=tiled SKIPDECODE_CUDA_GRAPHS=1"
fi
if [ ! -x build/gpu_bench ] || [ -z "$PREBUILT" ]; then
    gcc -O2 -Wall -Wextra -I cuda/include -I cuda/common cuda/dev/gpu_bench.c -o build/gpu_bench -ldl -lm >>"$OUT/bench.log" 2>&1 ||
        { say "bench: gpu_bench did not build (see bench.log)"; status=1; }
fi
if [ -x build/gpu_bench ]; then
    t=$(cap 170)
    staged "$OUT/bench.log" "$t" build/gpu_bench $QUICK --budget-s $((t > 40 ? t - 15 : t * 2 / 3)) --out "$OUT/bench.json"
    [ "$rc" -ne 0 ] && status=1
    say "bench: $(ran "$rc" "$t"); $(grep -E '^gpu_bench: ' "$OUT/bench.log" | tail -1)"
    for P in 128 2048; do
        echo "== long context: opt-1.3b, batch 1, prompt $P" >>"$OUT/bench.log"
        t=$(cap 40)
        staged "$OUT/bench.log" "$t" build/gpu_bench --models 1.3b --batches 1 --speedups 1 --slots 1 --prompt $P --new 64 \
            --reps 3 --budget-s $((t > 10 ? t - 5 : t))
        say "long context, prompt $P: $(grep -E '^\| 1 \| full' "$OUT/bench.log" | tail -1 | cut -d'|' -f6,7); $(grep -Eo 'prefill 1 × [0-9]+ tokens [0-9.]+ ms \([0-9]+ tok/s' "$OUT/bench.log" | tail -1)"
    done
    if [ -n "$OLD" ]; then
        # each switch alone against the first kernels: which change buys what
        for v in "simt simple 0" "tc simple 0" "simt tiled 0" "simt simple 1"; do
            set -- $v
            echo "== variant: SKIPDECODE_CUDA_GEMM=$1 SKIPDECODE_CUDA_ATTN=$2 SKIPDECODE_CUDA_GRAPHS=$3" >>"$OUT/bench.log"
            t=$(cap 45)
            staged "$OUT/bench.log" "$t" env SKIPDECODE_CUDA_GEMM=$1 SKIPDECODE_CUDA_ATTN=$2 SKIPDECODE_CUDA_GRAPHS=$3 \
                build/gpu_bench --quick --models 125m,1.3b --batches 1,32 --speedups 1,3 --budget-s $((t > 10 ? t - 5 : t))
            say "variant GEMM=$1 ATTN=$2 GRAPHS=$3: $(ran "$rc" "$t"); $(grep -E '^\| 1 \| full' "$OUT/bench.log" | tail -2 | cut -d'|' -f6 | tr '\n' ' ')"
        done
    fi
fi

# ---- 4. the PyTorch peer ------------------------------------------------------------------
if [ -n "$PEER" ] && timeout 20 python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
    t=$(cap 100)
    if [ "$t" -ge 20 ]; then
        : >"$OUT/torch.log"
        export PYTHONUNBUFFERED=1
        staged "$OUT/torch.log" "$t" python3 bench/torch_peer.py $QUICK --budget-s $((t - 15)) \
            --out build/torch.json --compare "$OUT/bench.json"
        say "torch peer: $(ran "$rc" "$t"); $(grep -E '^torch_peer: ' "$OUT/torch.log" | tail -1)"
        if [ -n "$STATIC" ]; then
            t=$(cap 150)
            staged "$OUT/torch.log" "$t" python3 bench/torch_peer.py --impls static --models 1.3b --batches 1,32 --reps 1 \
                --budget-s $((t - 10)) --compare "$OUT/bench.json"
            say "torch peer, static cache + compile: $(ran "$rc" "$t"); $(grep -E '^torch_peer: ' "$OUT/torch.log" | tail -1)"
        fi
    else
        say "torch peer: skipped (only $t s left)"
    fi
else
    say "torch peer: skipped (--no-peer, or python3 has no torch with CUDA here)"
fi

# ---- 5. bun test test/cuda.test.ts ----------------------------------------------------------
BUN=${BUN:-}
if [ -z "$BUN" ] && [ -f .device/bun.xz ]; then
    xz -dc .device/bun.xz >/tmp/bun && chmod +x /tmp/bun && BUN=/tmp/bun
fi
if [ -n "$BUN" ] && [ -x "$BUN" ]; then
    t=$(cap 60)
    : >"$OUT/cuda-test.log"
    staged "$OUT/cuda-test.log" "$t" "$BUN" test --timeout 60000 test/cuda.test.ts
    [ "$rc" -ne 0 ] && status=1
    say "bun test test/cuda.test.ts: $(ran "$rc" "$t"); $(grep -E '^ *[0-9]+ (pass|fail)' "$OUT/cuda-test.log" | tr '\n' ' ')"
fi

# ---- 6. summary ---------------------------------------------------------------------------
rm -f "$RCFILE"
say "done in $(elapsed) s; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
if [ "$status" -eq 0 ]; then say "RESULT: PASS"; else say "RESULT: FAIL (see above)"; fi
exit "$status"
