#!/usr/bin/env bash
# Quality of skip-aware models against a plain one: each model evaluated with
# `skipdecode eval` on held-out text at speedups 1..min(5, its layers), a
# summary table (every model's perplexity against the reference model's
# full depth), then a few sampled continuations of each model at 1x, 2x, 3x.
#
#   bash train/quality.sh [--quick] [--text FILE] [--ref DIR] DIR...
#   bash train/quality.sh SKIP_AWARE_DIR PLAIN_DIR [HELDOUT_TEXT]     (the older form)
#
# --text: the held-out text (default: the first DIR's heldout.txt, written by
#         train.py for the Brown corpus)
# --ref:  the model whose full-depth perplexity the summary compares with
#         (default: the last DIR — the plain model, by convention)
# --quick: 40 windows per evaluation and one prompt at 1x and 2x (a smoke
#          test: numbers are noisy)
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: bash train/quality.sh [--quick] [--text FILE] [--ref DIR] DIR..."
quick=0 text="" ref="" dirs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --text) text=${2:?$usage}; shift ;;
    --ref) ref=${2:?$usage}; shift ;;
    -h|--help) echo "$usage"; exit 0 ;;
    -*) echo "quality.sh: unknown option $1; $usage" >&2; exit 2 ;;
    *) dirs+=("$1") ;;
  esac
  shift
done
# the older form: a trailing file (not a folder) is the held-out text
if [ ${#dirs[@]} -ge 2 ] && [ -z "$text" ] && [ -f "${dirs[-1]}" ]; then
  text=${dirs[-1]}
  unset 'dirs[-1]'
fi
[ ${#dirs[@]} -ge 1 ] || { echo "$usage" >&2; exit 2; }
text=${text:-${dirs[0]}/heldout.txt}
ref=${ref:-${dirs[-1]}}
for d in "${dirs[@]}" "$ref"; do
  [ -f "$d/config.json" ] || { echo "quality.sh: $d has no config.json" >&2; exit 1; }
done
[ -f "$text" ] || { echo "quality.sh: no held-out text $text (give --text FILE)" >&2; exit 1; }

layers() { bun -e "console.log(JSON.parse(require('fs').readFileSync('$1/config.json','utf8')).num_hidden_layers)"; }
speedups() { # 1..min(5, layers): with one warm-up layer a model of L layers skips at most L-fold
  local l; l=$(layers "$1"); seq -s, 1 $(( l < 5 ? l : 5 ))
}
windows=()
[ $quick = 1 ] && windows=(--max-windows 40)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
i=0
for d in "${dirs[@]}"; do
  s=$(speedups "$d")
  echo "\$ bun bin/skipdecode.ts eval --model $d --text $text --speedups $s ${windows[*]}"
  bun bin/skipdecode.ts eval --model "$d" --text "$text" --speedups "$s" "${windows[@]}" --backend cpu 2>&1 \
    | grep -v '^eval: window' | tee "$tmp/$i"
  echo
  i=$((i + 1))
done
# the reference's full depth, from its own row (evaluated again only when it is not among DIR...)
refrow=""
i=0
for d in "${dirs[@]}"; do [ "$d" = "$ref" ] && refrow="$tmp/$i"; i=$((i + 1)); done
if [ -z "$refrow" ]; then
  bun bin/skipdecode.ts eval --model "$ref" --text "$text" --speedups 1 "${windows[@]}" --backend cpu 2>/dev/null > "$tmp/ref"
  refrow="$tmp/ref"
fi
base=$(awk -F'|' '$2+0 == 1 && $5 != "" { gsub(/[ ,]/, "", $5); print $5; exit }' "$refrow")

echo "Perplexity at each speedup (vs $ref at full depth, $base):"
echo
echo "| model | 1x | 2x | 3x | 4x | 5x |"
echo "|---|---:|---:|---:|---:|---:|"
i=0
for d in "${dirs[@]}"; do
  awk -F'|' -v name="$d" -v base="$base" '
    $2 + 0 >= 1 && $5 != "" && $2 !~ /speedup/ {
      p = $5; gsub(/[ ,]/, "", p); s = $2 + 0
      cell[s] = sprintf("%s (%+.1f%%)", p, (p / base - 1) * 100)
    }
    END {
      row = "| " name
      for (s = 1; s <= 5; s++) row = row " | " (s in cell ? cell[s] : "—")
      print row " |"
    }' "$tmp/$i"
  i=$((i + 1))
done
echo

prompts=("The committee met on Tuesday to discuss the new plan for the city's schools. The chairman said that"
         "She opened the door and looked out at the garden. It was")
samples=(1 2 3)
if [ $quick = 1 ]; then prompts=("${prompts[0]}"); samples=(1 2); fi
for p in "${prompts[@]}"; do
  for d in "${dirs[@]}"; do
    l=$(layers "$d")
    for s in "${samples[@]}"; do
      [ "$s" -le "$l" ] || continue
      echo "\$ bun bin/skipdecode.ts generate --model $d --prompt \"$p\" --speedup $s --max-new-tokens 40 --temperature 0.8 --top-k 40 --seed 3 --ignore-eos"
      bun bin/skipdecode.ts generate --model "$d" --prompt "$p" --speedup "$s" --max-new-tokens 40 \
        --temperature 0.8 --top-k 40 --seed 3 --ignore-eos --backend cpu 2>/dev/null | tr '\n' ' '
      echo; echo
    done
  done
done
