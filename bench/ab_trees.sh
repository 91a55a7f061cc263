#!/bin/bash
# Interleaved A/B of two trees, each with its own .venv: `bench/ab_trees.sh A_DIR B_DIR ROUNDS ARGS...`
# runs this tree's `bench/cpu_budget.py --runs 1 ARGS...` with A's Python (so A's daemon), then B's,
# ROUNDS times; compare the medians of each side's rows.
here=$(cd "$(dirname "$0")" && pwd)
a=$1; b=$2; rounds=$3; shift 3
for i in $(seq 1 "$rounds"); do
  for d in "$a" "$b"; do
    echo "=== round $i $d $(date +%T)"
    "$d/.venv/bin/python" "$here/cpu_budget.py" --runs 1 "$@" 2>&1 | grep "^| [ie]"
  done
done
