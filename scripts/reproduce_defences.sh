#!/usr/bin/env bash
# Every defence over its strengths, adaptive and naive attacker side by side (+experiment=defences),
# the utility of each point (deepleak train with the same defence on every step), and one report
# with leakage against strength and against utility.
#   scripts/reproduce_defences.sh                              # CPU scale
#   scripts/reproduce_defences.sh hydra/launcher=joblib        # both cores
#   scripts/reproduce_defences.sh scale=paper device=cuda      # on a GPU
# Extra arguments are Hydra overrides of the attack sweeps (resume=true continues the newest run).
# TRAIN_EPOCHS (default 10) sets the utility runs' epochs; TRAIN=0 skips them.
set -euo pipefail
. "$(dirname "$0")/sweep_dir.sh"
parent="$(sweep_dir defences "$@")"
# name | attack-sweep overrides (the ladder) | train-sweep overrides (the same ladder)
# (clip is left out of the ladders to keep the CPU run near 1.5 h; its ladder, as an extra run:
#  deepleak attack -m +experiment=defences defence=clip defence.max_norm=1,0.1,0.01,0.001)
ladders=(
  "none|defence=none attack.adaptive=true|defence=none"
  "noise|defence=noise defence.std=1e-4,1e-3,1e-2,1e-1|defence=noise defence.std=1e-4,1e-3,1e-2,1e-1"
  "prune|defence=prune defence.ratio=0.5,0.7,0.9,0.99|defence=prune defence.ratio=0.5,0.7,0.9,0.99"
  "quantize|defence=quantize defence.bits=16,8,4,2|defence=quantize defence.bits=16,8,4,2"
  "dp_sgd|defence=dp_sgd defence.max_norm=1 defence.noise_multiplier=0.1,0.5,1,2|defence=dp_sgd defence.max_norm=1 defence.noise_multiplier=0.1,0.5,1,2"
  "soteria|defence=soteria defence.ratio=0.2,0.4,0.6,0.8|defence=soteria defence.ratio=0.2,0.4,0.6,0.8"
  "secagg|defence=secagg defence.clients=1,2,4,16|defence=secagg defence.clients=1,2,4,16"
)
for entry in "${ladders[@]}"; do
  IFS="|" read -r name attack_args train_args <<< "$entry"
  # shellcheck disable=SC2086  # the ladders are word lists on purpose
  deepleak attack -m +experiment=defences $attack_args "hydra.sweep.dir=${parent}/${name}" "$@" \
    || echo "defences: the ${name} sweep ended with an error; its finished points stay in ${parent}/${name}" >&2
  if [[ "${TRAIN:-1}" != "0" && ! -e "${parent}/utility/${name}" ]]; then  # a resumed run keeps its utility runs
    # shellcheck disable=SC2086
    deepleak train -m $train_args epochs="${TRAIN_EPOCHS:-10}" seed=1000 "hydra.sweep.dir=${parent}/utility/${name}" \
      || echo "defences: the ${name} utility sweep ended with an error" >&2
  fi
done
deepleak report "${parent}"
