#!/usr/bin/env bash
# The LLaMA route of docs/training.md, end to end on the Brown corpus
# (CPU-reproducible, seeds fixed): a plain LLaMA-architecture model stands in
# for "a pretrained model"; it is then fine-tuned skip-aware with --init
# (a) without and (b) with --distill; train/quality.sh compares the three.
#
#   bash train/llama-evidence.sh [--quick] [OUT_DIR]      (OUT_DIR: build/evidence)
#
# --quick: a 4-layer model and a few dozen steps, to check the pipeline in a
# couple of minutes (its numbers mean nothing). Each run's log is OUT_DIR/NAME.log.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
[ "${1:-}" = "--quick" ] && { quick=1; shift; }
out=${1:-build/evidence}
mkdir -p "$out"
py=${SKIPDECODE_PYTHON:-/usr/bin/python3}
if [ $quick = 1 ]; then
  model=(--family llama --layers 4 --hidden 64 --heads 4 --kv-heads 2 --ffn 192 --vocab 1024 --train-chars 400000)
  plain_steps=(--steps 60 --lr-warmup 10 --eval-every 0 --final-eval-windows 100)
  ft_steps=(--steps 20 --lr-warmup 2 --eval-every 0 --final-eval-windows 100 --train-chars 400000)
  quick_flag=(--quick)
  tag=quick
else
  model=(--family llama --layers 12 --hidden 128 --heads 4 --kv-heads 2 --ffn 384)
  plain_steps=(--steps 600 --eval-every 250)
  ft_steps=(--steps 400 --lr 1e-3 --lr-warmup 40 --eval-every 100)
  quick_flag=()
  tag=12l
fi
common=(--seed 0 --threads 1)

run() { # NAME ARGS...: one training run, skipped when its export is already there
  local name=$1; shift
  if [ -f "$out/$name/training.json" ]; then echo "$out/$name: done already"; return; fi
  echo "\$ $py train/train.py --out $out/$name $*"
  "$py" train/train.py --out "$out/$name" "$@" 2>&1 | tee "$out/$name.log" | grep -E '^(plan|memory|compute|done|held-out perplexity)'
}
plain=plain-llama-$tag skipft=skipft-llama-$tag distill=distill-llama-$tag
run $plain "${model[@]}" --policy full "${plain_steps[@]}" "${common[@]}"
run $skipft --init "$out/$plain" --policy skip "${ft_steps[@]}" "${common[@]}"
run $distill --init "$out/$plain" --policy skip --distill "${ft_steps[@]}" "${common[@]}"
bash train/quality.sh "${quick_flag[@]}" --text "$out/$plain/heldout.txt" "$out/$distill" "$out/$skipft" "$out/$plain"
