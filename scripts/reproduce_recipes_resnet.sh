#!/usr/bin/env bash
# Reproduce the paper_recipes_resnet preset and write its report (extra arguments: Hydra overrides,
# e.g. scale=paper device=cuda, hydra/launcher=joblib, resume=true).
exec "$(dirname "$0")/reproduce.sh" paper_recipes_resnet "$@"
