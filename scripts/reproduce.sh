#!/usr/bin/env bash
# Run one paper preset as a sweep, then its report.
#   scripts/reproduce.sh paper_label_duplicates                    # CPU scale
#   scripts/reproduce.sh paper_batch_size scale=paper device=cuda  # the paper's sizes, on a GPU
#   scripts/reproduce.sh paper_wrong_labels hydra/launcher=joblib  # both cores
# Extra arguments are Hydra overrides. Rerunning with resume=true finishes an interrupted sweep.
set -euo pipefail
experiment="$1"
shift
stamp="$(date +%Y-%m-%d/%H-%M-%S-%N)"
sweep="outputs/multirun/${experiment}/${stamp}"
for arg in "$@"; do
  # resume=true continues the newest sweep of this preset instead of starting a new one.
  if [[ "$arg" == "resume=true" ]]; then
    latest="$(ls -d outputs/multirun/"${experiment}"/*/* 2>/dev/null | sort | tail -n 1 || true)"
    [[ -n "$latest" ]] && sweep="$latest"
  fi
done
deepleak attack -m "+experiment=${experiment}" "hydra.sweep.dir=${sweep}" "$@"
deepleak report "${sweep}"
