"""Choose `labels=adaptive`'s settings at K >= classes (labels.shrink, labels.sharpness,
labels.residual) on tuning victims, or score given settings on held-out ones.

    OMP_NUM_THREADS=1 python scripts/adaptive_fit.py --checkpoints dlg,PATH_EPOCH_0,PATH_EPOCH_1,... \
        [--ks 16,32,64] [--seed 0] [--trials 20] [--set model=mlp] [--cache inputs.json] [--show 0.3:2:0.1]

Each trial's inputs are computed once, on the attack task's client (the same seeds, data,
model and scenario as `deepleak attack attack=none distribution=random batch_size=K seed=S
trials=T model.checkpoint=PATH`; `dlg` is an untrained DLG init): the victim's
class-embedding confidence c, zeroshot_plus's counts, the bias gradient's counts-less-mass
-K db (which gives the missed label mass m) and the true counts. Every setting of the grid
is then scored with Adaptive's own weight and blend (deepleak/labels/adaptive.py), on the
same inputs: the mean label accuracy less the label floor per cell (checkpoint, K), then its
mean and minimum over the cells.
It prints the best settings by mean gain and the per-cell table of the best one and of
``--show``'s. ``--cache`` keeps the inputs (JSON) so that another grid costs no attack;
given several times, existing caches (victims of other ``--set`` overrides, say) are scored
together. A victim is named by its checkpoint and its ``--set`` overrides.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from label_figures import compose, trial_observations  # noqa: E402

from deepleak.config import make  # noqa: E402
from deepleak.labels import Adaptive, ZeroShotPlus  # noqa: E402
from deepleak.labels.base import counts_to_labels  # noqa: E402
from deepleak.metrics import label_accuracy, label_floor  # noqa: E402


def inputs(checkpoints: list[str], ks: list[int], seed: int, trials: int, overrides: list[str]) -> list[dict]:
    """Per trial: checkpoint, K, c, zeroshot_plus's counts, -K db, the true labels."""
    zeroshot_plus, rows = ZeroShotPlus(), []
    for checkpoint in checkpoints:
        for k in ks:
            victim = [] if checkpoint == "dlg" else [f"model.checkpoint={checkpoint}"]
            victim_name = " ".join([checkpoint, *overrides])
            cfg = compose("attack=none", "distribution=random", f"batch_size={k}", f"seed={seed}", *victim, *overrides)
            dataset, distribution, scenario = (make(cfg[name]) for name in ("dataset", "distribution", "scenario"))
            for observation, labels, _ in trial_observations(cfg, dataset, distribution, scenario, trials, seed):
                rows.append({"checkpoint": victim_name, "k": k, "classes": dataset.num_classes,
                             "confidence": Adaptive.confidence(observation),
                             "zeroshot_plus": zeroshot_plus.counts(observation).double().tolist(),
                             "counts_less_mass": Adaptive.counts_less_mass(observation).tolist(),
                             "labels": labels.tolist()})
    return rows


def gains(rows: list[dict], shrink: float, sharpness: float, residual: float) -> dict[tuple[str, int], float]:
    """Mean label accuracy less the label floor, per (checkpoint, K)."""
    method, cells = Adaptive(shrink=shrink, sharpness=sharpness, residual=residual), {}
    for row in rows:
        k, classes = row["k"], row["classes"]
        counts_less_mass = torch.tensor(row["counts_less_mass"])
        weight = method.weight(row["confidence"], method.missed_mass(counts_less_mass, k))
        counts = method.blend(torch.tensor(row["zeroshot_plus"]), counts_less_mass, weight, k)
        restored = counts_to_labels(counts.numpy(), k, method.zeroshot_plus.rounding)
        gain = label_accuracy(restored, row["labels"], classes) - label_floor(row["labels"], classes)
        cells.setdefault((row["checkpoint"], k), []).append(gain)
    return {cell: float(np.mean(values)) for cell, values in cells.items()}


def setting(text: str) -> tuple[float, float, float]:
    shrink, sharpness, residual = (float(x) for x in text.split(":"))
    return shrink, sharpness, residual


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", default="dlg", help="comma-separated checkpoint paths; dlg: untrained")
    parser.add_argument("--ks", default="16,32,64")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--set", action="append", default=[], help="a config override (e.g. --set=model=resnet18)")
    parser.add_argument("--shrink", default="0.2,0.25,0.3,0.35,0.4,0.5,0.6")
    parser.add_argument("--sharpness", default="1,1.5,2,3,4")
    parser.add_argument("--residual", default="0,0.1,0.2")
    parser.add_argument("--show", default="", help="settings shrink:sharpness:residual to print per cell")
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--cache", type=Path, action="append", default=[],
                        help="JSON of the inputs: read if it exists, else written; several: all read")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    missing = [path for path in args.cache if not path.exists()]
    if len(args.cache) > 1 and missing:
        parser.error(f"several --cache files are only read, and {missing[0]} does not exist")
    if args.cache and not missing:
        rows = [row for path in args.cache for row in json.loads(path.read_text())]
    else:
        rows = inputs(args.checkpoints.split(","), [int(k) for k in args.ks.split(",")], args.seed, args.trials, args.set)
        if args.cache:
            args.cache[0].write_text(json.dumps(rows))
    grid = list(itertools.product(*([float(x) for x in values.split(",")] for values in (args.shrink, args.sharpness, args.residual))))
    scored = {cfg: gains(rows, *cfg) for cfg in grid}
    ranked = sorted(scored, key=lambda cfg: -np.mean(list(scored[cfg].values())))
    print(f"{len(rows)} trials, {len(next(iter(scored.values())))} cells; gain = label accuracy - label floor\n")
    print("| shrink | sharpness | residual | mean gain | min gain |\n|--:|--:|--:|--:|--:|")
    for cfg in ranked[:args.top]:
        values = list(scored[cfg].values())
        print("| %g | %g | %g | %+.4f | %+.4f |" % (*cfg, np.mean(values), np.min(values)))
    shown = [ranked[0]] + [setting(text) for text in args.show.split(",") if text]
    for cfg in shown:
        scored.setdefault(cfg, gains(rows, *cfg))
    confidence = {}
    for row in rows:
        confidence.setdefault((row["checkpoint"], row["k"]), []).append(row["confidence"])
    print("\n| checkpoint | K | mean c | " + " | ".join("%g:%g:%g" % cfg for cfg in shown) + " |")
    print("|---|--:|--:|" + "--:|" * len(shown))
    for cell in scored[shown[0]]:
        print(f"| {cell[0]} | {cell[1]} | {np.mean(confidence[cell]):.2f} | "
              + " | ".join("%+.3f" % scored[cfg][cell] for cfg in shown) + " |")


if __name__ == "__main__":
    main()
