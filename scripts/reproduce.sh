#!/usr/bin/env bash
# Run one paper preset as a sweep, then its report.
#   scripts/reproduce.sh paper_label_duplicates                    # CPU scale
#   scripts/reproduce.sh paper_batch_size scale=paper device=cuda  # the paper's sizes, on a GPU
#   scripts/reproduce.sh paper_wrong_labels hydra/launcher=joblib  # both cores
# Extra arguments are Hydra overrides. Rerunning with resume=true finishes an interrupted sweep.
set -euo pipefail
experiment="$1"
shift
. "$(dirname "$0")/sweep_dir.sh"
sweep="$(sweep_dir "${experiment}" "$@")"  # resume=true: the newest sweep of this preset
deepleak attack -m "+experiment=${experiment}" "hydra.sweep.dir=${sweep}" "$@"
deepleak report "${sweep}"
