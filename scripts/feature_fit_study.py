"""Label methods on untrained and trained victims, side by side: the figures of
docs/labels.md (trained victims) for ``labels=feature_fit``.

Every method sees the *same* observations (the attack task's client: same seeds, data,
model and scenario as `deepleak attack attack=none ... trials=T seed=S`); a cell prints the
mean label accuracy over the trials and its 95% interval (t interval on the trial means).

    OMP_NUM_THREADS=1 python scripts/feature_fit_study.py \
        --setting "8:10:32:PATH_LENET32" --setting "64:100:12:PATH_LENET12_C100" [--trials 20] [--seed 1000]

A setting is K:classes:width:checkpoint (the checkpoint of `deepleak train` with the same
model.width and dataset.num_classes); each is run untrained (model.checkpoint=null, a fresh
DLG init per trial) and trained.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from label_figures import compose, method_overrides, timed_accuracy, trial_observations  # noqa: E402

from deepleak.config import make  # noqa: E402
from deepleak.metrics import label_floor  # noqa: E402

METHODS = "feature_fit,zeroshot_plus,zeroshot,ilrg,llg"
FLOOR = "label floor"  # the last column: a blind flat guess's accuracy (deepleak.metrics.label_floor)


def interval(values: list[float]) -> tuple[float, float]:
    """(mean, half-width of the 95% t interval)."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return float(x.mean()), float("nan")
    return float(x.mean()), float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / len(x) ** 0.5)


def cells(methods: list[str], trials: int, seed: int, *overrides: str, first: int = 0) -> dict[str, tuple]:
    cfg = compose("attack=none", "distribution=random", *overrides, f"seed={seed}")
    dataset, distribution, scenario = (make(cfg[name]) for name in ("dataset", "distribution", "scenario"))
    label_methods = {m: make(compose(*method_overrides(m)).labels) for m in methods}
    accuracy = {m: [] for m in methods}
    seconds = {m: [] for m in methods}
    floor = []
    for observation, labels, _ in trial_observations(cfg, dataset, distribution, scenario, trials, seed, first):
        floor.append(label_floor(labels, dataset.num_classes))
        for name, method in label_methods.items():
            scored = timed_accuracy(method, observation, labels, dataset.num_classes, name)
            if scored is not None:
                accuracy[name].append(scored[0])
                seconds[name].append(scored[1])
    row = {m: (*interval(accuracy[m]), len(accuracy[m]), float(np.mean(seconds[m])) if seconds[m] else float("nan"))
           for m in methods}
    return {**row, FLOOR: (*interval(floor), len(floor), 0.0)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", action="append", required=True, help="K:classes:width:checkpoint")
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--crops", type=int, default=64, help="dataset.crops_per_class")
    parser.add_argument("--victims", default="untrained,trained", help="untrained, trained or both")
    parser.add_argument("--first-trial", type=int, default=0, help="trials first .. first + trials - 1")
    parser.add_argument("--model", default="lenet", help="the victim's config (conf/model); width: its model.width")
    args = parser.parse_args(argv)
    methods = args.methods.split(",")
    print(f"\nLabel accuracy, mean ± 95% interval over {args.trials} trials (seed {args.seed}), random labels, "
          f"sample set, model={args.model} (DLG init where untrained); s = label seconds per trial\n")
    print("| K | classes | width | victim | " + " | ".join([*methods, FLOOR]) + " |")
    print("|---" * (len(methods) + 5) + "|")
    for setting in args.setting:
        k, classes, width, checkpoint = setting.split(":", 3)
        for victim, path in (("untrained", "null"), ("trained", checkpoint)):
            if victim not in args.victims.split(","):
                continue
            row = cells(methods, args.trials, args.seed, f"model={args.model}", f"batch_size={k}", f"dataset.num_classes={classes}",
                        f"model.width={width}", f"dataset.crops_per_class={args.crops}", f"model.checkpoint={path}",
                        first=args.first_trial)
            text = [f"{m:.3f} ± {h:.3f}" + ("" if name == FLOOR else f" ({s:.2f} s)") if n else "refused"
                    for name, (m, h, n, s) in row.items()]
            print(f"| {k} | {classes} | {width} | {victim} | " + " | ".join(text) + " |", flush=True)


if __name__ == "__main__":
    main()
