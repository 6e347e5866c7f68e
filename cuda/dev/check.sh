#!/bin/sh
# check.sh — build both backends and the dev harnesses, then run them.
# Run from the repository root:  sh cuda/dev/check.sh
# Uses `bun scripts/build.ts` when bun exists, else the same compiler lines
# directly (a bare GPU machine may have nvcc but no bun).
set -e
mkdir -p build
if command -v bun >/dev/null 2>&1; then
    bun scripts/build.ts
else
    gcc -O3 -std=c11 -fPIC -shared -pthread -fopenmp-simd -fno-math-errno -fno-trapping-math -Wall -Wextra \
        -Wno-unused-parameter -fvisibility=hidden -I cuda/include -I cuda/common cuda/cpu/*.c \
        -o build/libskipdecode_cpu.so -lm
    nvcc -O3 -std=c++17 -shared -Xcompiler -fPIC,-fvisibility=hidden,-Wall --expt-relaxed-constexpr \
        -Werror all-warnings -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
        -gencode arch=compute_90,code=compute_90 -I cuda/include -I cuda/common cuda/gpu/*.cu \
        -o build/libskipdecode_cuda.so
fi
gcc -O1 -Wall -Wextra -I cuda/include cuda/dev/nodevice.c -o build/nodevice -ldl
gcc -O2 -Wall -Wextra -I cuda/include -I cuda/common cuda/dev/parity.c -o build/parity -ldl -lm
if command -v nvcc >/dev/null 2>&1; then
    nvcc -O2 -std=c++17 -Werror all-warnings -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
        -I cuda/include -I cuda/common cuda/dev/sample.cu cuda/gpu/sample.cu cuda/gpu/errors.cu cuda/cpu/sample.c \
        -o build/sample_check
fi
build/nodevice
if build/nodevice | grep -q SKD_ERR_NO_DEVICE; then
    echo "no GPU here: parity and sample_check skipped"
    exit 0
fi
build/parity
build/sample_check
