#!/bin/sh
# check.sh — build both backends and the dev harnesses, then run them.
# Run from the repository root:  sh cuda/dev/check.sh
# Uses `bun scripts/build.ts` when bun exists, else the same compiler lines
# directly (a bare GPU machine may have nvcc but no bun). With SKD_PREBUILT=1,
# outputs already in build/ are used as they are (built elsewhere and carried).
#
# On a GPU it runs:
#   nodevice       the library loads and answers
#   parity         CUDA vs the CPU engine, once per kernel variant (engine.cu):
#                    defaults | tc GEMMs + tiled attention for steps of >= 9 rows
#                    and split attention (8-key chunks) below + graphs (captured
#                    at first sight) | tc with every GEMM on the tiled kernel
#                    (TILE_FROM=1) and split attention
#   sample_check   the device sampler vs the CPU's
#   gemm_check     every GEMM variant on real model shapes vs float64, and timed
set -e
mkdir -p build
have() { [ -n "${SKD_PREBUILT:-}" ] && [ -f "build/$1" ]; }
if have libskipdecode_cpu.so && have libskipdecode_cuda.so; then
    echo "check: using prebuilt build/libskipdecode_cpu.so and build/libskipdecode_cuda.so"
elif command -v bun >/dev/null 2>&1; then
    bun scripts/build.ts
else
    gcc -O3 -std=c11 -fPIC -shared -pthread -fopenmp-simd -fno-math-errno -fno-trapping-math -Wall -Wextra \
        -Wno-unused-parameter -fvisibility=hidden -I cuda/include -I cuda/common cuda/cpu/*.c \
        -o build/libskipdecode_cpu.so -lm
    nvcc -O3 -std=c++17 -shared --threads 0 -Xcompiler -fPIC,-fvisibility=hidden,-Wall --expt-relaxed-constexpr \
        -Werror all-warnings -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
        -gencode arch=compute_90,code=compute_90 -I cuda/include -I cuda/common cuda/gpu/*.cu \
        -o build/libskipdecode_cuda.so
fi
have nodevice || gcc -O1 -Wall -Wextra -I cuda/include cuda/dev/nodevice.c -o build/nodevice -ldl
have parity || gcc -O2 -Wall -Wextra -I cuda/include -I cuda/common cuda/dev/parity.c -o build/parity -ldl -lm
if command -v nvcc >/dev/null 2>&1; then
    NVFLAGS="-O2 -std=c++17 -Werror all-warnings -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 -I cuda/include -I cuda/common"
    have sample_check || nvcc $NVFLAGS cuda/dev/sample.cu cuda/gpu/sample.cu cuda/gpu/errors.cu cuda/cpu/sample.c \
        -o build/sample_check
    have gemm_check || nvcc $NVFLAGS cuda/dev/gemm.cu cuda/gpu/gemm.cu cuda/gpu/gemm_tc.cu cuda/gpu/errors.cu \
        -o build/gemm_check
fi
build/nodevice
if build/nodevice | grep -q SKD_ERR_NO_DEVICE; then
    echo "no GPU here: parity, sample_check and gemm_check skipped"
    exit 0
fi
rc=0
echo "== parity: default kernels"
build/parity || rc=1
echo "== parity: tensor-core GEMMs, tiled prefill + split decode attention, CUDA graphs"
SKIPDECODE_CUDA_GEMM=tc SKIPDECODE_CUDA_ATTN=tiled SKIPDECODE_CUDA_TILED_FROM=9 SKIPDECODE_CUDA_ATTN_CHUNK=8 \
    SKIPDECODE_CUDA_GRAPHS=always build/parity || rc=1
echo "== parity: the same, every GEMM on the tiled tensor-core kernel"
SKIPDECODE_CUDA_GEMM=tc SKIPDECODE_CUDA_TILE_FROM=1 SKIPDECODE_CUDA_ATTN=split SKIPDECODE_CUDA_ATTN_CHUNK=8 \
    SKIPDECODE_CUDA_GRAPHS=always build/parity || rc=1
echo "== sample_check"
build/sample_check || rc=1
echo "== gemm_check"
build/gemm_check ${GEMM_CHECK_FLAGS:-} || rc=1
exit $rc
