#!/usr/bin/env bash
# Prints the headline rows of a run_gpu_bench.sh tables.md, one per line, for scripts/gpu-check.sh's summary:
#   <model> <step>|<ms> ms, <tok/s> tok/s, <share> of roofline
# (the HF peer's rows without the roofline share). Models: "V2-Lite", "V2-Lite HF", "V3 slice".
#   bash tools/bench/summary_rows.sh OUT/tables.md
set -uo pipefail
awk -F'|' '
  /^### DeepSeek-V2-Lite shape/ { model = "V2-Lite"; next }
  /^### HF transformers peer/ { model = "V2-Lite HF"; next }
  /^### DeepSeek-V3 slice/ { model = "V3 slice"; next }
  /^### / { model = ""; next }
  model != "" && /^\| (prefill|decode)/ {
    step = $2; batch = $3; ms = $4; toks = $6; share = $NF == "" ? $(NF - 1) : $NF
    gsub(/^ +| +$/, "", step); gsub(/ /, "", batch); gsub(/ /, "", ms); gsub(/ /, "", toks); gsub(/ /, "", share)
    if (step ~ /^decode/ && batch != "1" && batch != "64" && batch != "256") next
    sub(/ @1024.*/, " @1K", step); sub(/×/, "x", step)
    line = model " " step " b=" batch "|" ms " ms, " toks " tok/s"
    if (model !~ /HF/) line = line ", " share " of roofline"
    print line
  }' "$1"
