"""Print how the shared gradient's scale changes as the victim trains (issue 25): per stage
checkpoint, the squared norm of the FedSGD gradient the server sees, summed over layers, and
its share in the last layer; the trials' median and range. It shows why a fixed prior weight
next to a squared distance (geng_plus) drifts with training while a cosine does not
(attack=cosine_lbfgs, docs/training_stages.md).

    OMP_NUM_THREADS=1 python scripts/gradient_scale.py --checkpoints none,RUN/checkpoints/epoch_5.pt,... \
        [--trials 10] [--seed 1000] [--batch-size 4] [--distribution unique] [--set dataset.resolution=16 ...]

``none`` is the untrained victim (a fresh init per trial). Each trial's batch and model seed are
those of `deepleak attack seed=SEED` trial by trial.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from label_figures import compose, trial_observations  # noqa: E402

from deepleak.config import make  # noqa: E402
from deepleak.labels.base import last_layer_gradient  # noqa: E402


def scales(checkpoint: str, trials: int, seed: int, batch_size: int, distribution: str,
           extra: tuple[str, ...] = ()) -> tuple[list[float], list[float]]:
    """(squared norms, last-layer shares) of the trials' shared gradients on one checkpoint."""
    overrides = ["attack=none", f"batch_size={batch_size}", f"distribution={distribution}", f"seed={seed}", *extra]
    if checkpoint != "none":
        overrides.append(f"model.checkpoint={checkpoint}")
    cfg = compose(*overrides)
    dataset, sampler, scenario = (make(cfg[name]) for name in ("dataset", "distribution", "scenario"))
    norms, shares = [], []
    for observation, _, _ in trial_observations(cfg, dataset, sampler, scenario, trials, seed):
        total = sum(float((g.double() ** 2).sum()) for g in observation.gradient)
        classifier = sum(float((g.double() ** 2).sum()) for g in last_layer_gradient(observation) if g is not None)
        norms.append(total)
        shares.append(classifier / total)
    return norms, shares


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", required=True, help="comma-separated checkpoint paths; none: untrained")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--distribution", default="unique")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a further override of the attack config (the victim's data set or model), repeatable")
    args = parser.parse_args(argv)
    print(f"squared norm of the shared gradient, batch {args.batch_size} ({args.distribution}), seed {args.seed}, "
          f"{args.trials} trials: median [min, max]; last layer's share of it (median)\n")
    print("| checkpoint | squared norm | last layer's share |")
    print("|---|--:|--:|")
    for checkpoint in args.checkpoints.split(","):
        norms, shares = scales(checkpoint, args.trials, args.seed, args.batch_size, args.distribution, tuple(args.set))
        print(f"| {checkpoint} | {np.median(norms):.3g} [{min(norms):.3g}, {max(norms):.3g}] | {np.median(shares):.2f} |")


if __name__ == "__main__":
    main()
