#!/usr/bin/env bash
# The README's quality table: a skip-aware model and its plain twin, each
# evaluated at speedups 1-5 with `skipdecode eval` on the held-out Brown text,
# then a few sampled continuations of both at 1x, 2x and 3x.
#
#   bash train/quality.sh SKIP_AWARE_DIR PLAIN_DIR [HELDOUT_TEXT]
#
# HELDOUT_TEXT defaults to SKIP_AWARE_DIR/heldout.txt (written by train.py).
set -euo pipefail
cd "$(dirname "$0")/.."
skip=${1:?usage: bash train/quality.sh SKIP_AWARE_DIR PLAIN_DIR [HELDOUT_TEXT]}
plain=${2:?usage: bash train/quality.sh SKIP_AWARE_DIR PLAIN_DIR [HELDOUT_TEXT]}
text=${3:-$skip/heldout.txt}
for d in "$skip" "$plain"; do
  [ -f "$d/config.json" ] || { echo "quality.sh: $d has no config.json" >&2; exit 1; }
done
[ -f "$text" ] || { echo "quality.sh: no held-out text $text" >&2; exit 1; }

for d in "$skip" "$plain"; do
  echo "\$ bun bin/skipdecode.ts eval --model $d --text $text --speedups 1,2,3,4,5"
  bun bin/skipdecode.ts eval --model "$d" --text "$text" --speedups 1,2,3,4,5 --backend cpu 2>&1 | grep -v '^eval: window'
  echo
done

prompts=("The committee met on Tuesday to discuss the new plan for the city's schools. The chairman said that"
         "She opened the door and looked out at the garden. It was")
for p in "${prompts[@]}"; do
  for d in "$skip" "$plain"; do
    for s in 1 2 3; do
      echo "\$ bun bin/skipdecode.ts generate --model $d --prompt \"$p\" --speedup $s --max-new-tokens 40 --temperature 0.8 --top-k 40 --seed 3 --ignore-eos"
      bun bin/skipdecode.ts generate --model "$d" --prompt "$p" --speedup "$s" --max-new-tokens 40 \
        --temperature 0.8 --top-k 40 --seed 3 --ignore-eos --backend cpu 2>/dev/null | tr '\n' ' '
      echo; echo
    done
  done
done
