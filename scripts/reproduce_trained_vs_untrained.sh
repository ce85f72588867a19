#!/usr/bin/env bash
# Train the victim of the paper_trained_vs_untrained preset, then compare every label method
# on it untrained and trained, and write the report. Extra arguments: Hydra overrides of the attack sweep.
set -euo pipefail
train_dir="outputs/train/trained_vs_untrained/$(date +%Y-%m-%d/%H-%M-%S-%N)"
deepleak train model.width=12 dataset.num_classes=100 epochs="${EPOCHS:-30}" "hydra.run.dir=${train_dir}"
exec "$(dirname "$0")/reproduce.sh" paper_trained_vs_untrained "model.checkpoint=null,${train_dir}/checkpoint.pt" "$@"
