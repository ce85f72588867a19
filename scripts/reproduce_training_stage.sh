#!/usr/bin/env bash
# Leakage at every stage of training (+experiment=training_stage): train one victim (the default
# LeNet on the sample set) keeping a checkpoint at each stage, attack every stage, and write one
# report with leakage against epoch and against the victim's test accuracy (## Training stages).
#   scripts/reproduce_training_stage.sh hydra/launcher=joblib   # CPU scale, both cores (about 15 min here)
#   scripts/reproduce_training_stage.sh scale=paper device=cuda # more trials, on a GPU
# Extra arguments are Hydra overrides of every attack sweep (resume=true continues the newest run);
# EPOCHS (default 20) and STAGES (default 0,1,2,5,10,20: the epochs attacked, 0 = the initial
# model) set the training run.
set -euo pipefail
. "$(dirname "$0")/sweep_dir.sh"
parent="$(sweep_dir training_stage "$@")"
victim="${parent}/victim"
if [[ ! -e "${victim}/checkpoint.pt" ]]; then  # a resumed run keeps its victim
  deepleak train epochs="${EPOCHS:-20}" "checkpoint_epochs=[${STAGES:-0,1,2,5,10,20}]" seed=1000 "hydra.run.dir=${victim}"
fi
checkpoints=""
IFS="," read -r -a stages <<< "${STAGES:-0,1,2,5,10,20}"
for epoch in "${stages[@]}"; do
  checkpoints+="${checkpoints:+,}${victim}/checkpoints/epoch_${epoch}.pt"
done
# The reconstructions' trials (at smoke scale also their budget) and the FedAvg label methods'
# trials, by scale as ${scaled:...} would give them; plain values, so that each job records a number.
scale="cpu"
for arg in "$@"; do
  if [[ "$arg" == scale=* ]]; then scale="${arg#scale=}"; fi
done
case "$scale" in
  paper) images="trials=10"; fedavg="trials=20" ;;
  smoke) images="trials=1 attack.max_evaluations=2"; fedavg="trials=1" ;;
  *) images="trials=4"; fedavg="trials=10" ;;
esac
# name (not "images": the report skips folders of that name) | overrides of the preset, whose own
# sweep is every FedSGD label method (feature_fit included) at batch 8, labels only; batch 64 (more
# samples than classes) for the default (adaptive) and the methods it is measured against. The
# reconstructions: the default recipe (geng_plus) with the true labels, and deepleak's recipe for
# trained victims (cosine_lbfgs) with the true labels and with the default label method's
# (adaptive: feature_fit_search below K = classes), each at its own budget (about 2200 gradient
# evaluations). FedAvg: the client's default local training (N 8, B 2, E 2, eta 0.01), the
# paper's zero-shot on the pseudo-gradient, Dimitrov et al.'s and deepleak's weight-based methods.
routes=(
  "labels|"
  "labels_64|labels=adaptive,zeroshot,zeroshot_plus,llg,ilrg batch_size=64"
  "labels_idlg|labels=idlg batch_size=1"
  "labels_fedavg|+scenario=fedavg labels=zeroshot,fedavg_interpolated,fedavg_fitted,fedavg_fitted_search ${fedavg}"
  "reconstruction|attack=geng_plus batch_size=4 distribution=unique labels=oracle ${images}"
  "reconstruction_cosine|attack=cosine_lbfgs batch_size=4 distribution=unique labels=oracle,adaptive ${images}"
)
for entry in "${routes[@]}"; do
  IFS="|" read -r name route_args <<< "$entry"
  # shellcheck disable=SC2086  # the routes are word lists on purpose
  deepleak attack -m +experiment=training_stage $route_args "model.checkpoint=${checkpoints}" \
    "hydra.sweep.dir=${parent}/${name}" "$@" \
    || echo "training_stage: the ${name} sweep ended with an error; its finished points stay in ${parent}/${name}" >&2
done
deepleak report "${parent}"
