"""Choose `labels=adaptive`'s settings at K >= classes (labels.shrink, labels.sharpness,
labels.mass_power, labels.present_share, labels.residual) on tuning victims, or score given
settings on held-out ones.

    OMP_NUM_THREADS=1 python scripts/adaptive_fit.py --checkpoints dlg,PATH_EPOCH_0,PATH_EPOCH_1,... \
        [--ks 16,32,64] [--seed 0] [--trials 20] [--set model=mlp] [--cache inputs.json] \
        [--show 0.3:2:1:0.5:0.1]

Each trial's inputs are computed once, on the attack task's client (the same seeds, data,
model and scenario as `deepleak attack attack=none distribution=random batch_size=K seed=S
trials=T model.checkpoint=PATH`, another distribution with `--set distribution=...`; `dlg` is
an untrained DLG init): the victim's class-embedding confidence c, zeroshot_plus's counts,
the bias gradient's counts-less-mass -K db (which gives the missed label mass m), the classes
the weight gradient shows present and the true counts. Every setting of the grid is then
scored with Adaptive's own weight and blend (deepleak/labels/adaptive.py), on the same
inputs: the mean label accuracy less the label floor per cell (checkpoint, K), then its mean
and minimum over the cells. It prints the best settings by mean gain, then for the best one
and ``--show``'s the per-cell table and each group's mean and worst cell (a group: the
``--set`` overrides and the checkpoint's stage, untrained to epoch 2, mid 3-5, trained from
10). ``--cache`` keeps the inputs (JSON) so that another grid costs no attack; given several
times, existing caches (victims of other ``--set`` overrides, say) are scored together. A
victim is named by its checkpoint and its ``--set`` overrides.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
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
    """Per trial: the victim's name, K, c, zeroshot_plus's counts, -K db, the classes shown
    present, the true labels."""
    zeroshot_plus, rows = ZeroShotPlus(), []
    for checkpoint in checkpoints:
        for k in ks:
            victim = [] if checkpoint == "dlg" else [f"model.checkpoint={checkpoint}"]
            victim_name = " ".join([checkpoint, *overrides])
            default = [] if any(o.startswith("distribution=") for o in overrides) else ["distribution=random"]
            cfg = compose("attack=none", *default, f"batch_size={k}", f"seed={seed}", *victim, *overrides)
            dataset, distribution, scenario = (make(cfg[name]) for name in ("dataset", "distribution", "scenario"))
            for observation, labels, _ in trial_observations(cfg, dataset, distribution, scenario, trials, seed):
                rows.append({"checkpoint": victim_name, "k": k, "classes": dataset.num_classes,
                             "confidence": Adaptive.confidence(observation),
                             "zeroshot_plus": zeroshot_plus.counts(observation).double().tolist(),
                             "counts_less_mass": Adaptive.counts_less_mass(observation).tolist(),
                             "present": Adaptive.present_classes(observation).tolist(),
                             "labels": labels.tolist()})
    return rows


def gains(rows: list[dict], shrink: float, sharpness: float, mass_power: float, present_share: float,
          residual: float) -> dict[tuple[str, int], float]:
    """Mean label accuracy less the label floor, per (checkpoint, K)."""
    method = Adaptive(shrink=shrink, sharpness=sharpness, mass_power=mass_power, present_share=present_share,
                      residual=residual)
    cells = {}
    for row in rows:
        k, classes = row["k"], row["classes"]
        counts_less_mass = torch.tensor(row["counts_less_mass"])
        weight = method.weight(row["confidence"], method.missed_mass(counts_less_mass, k))
        support = method.flat_support(torch.tensor(row["present"]))
        counts = method.blend(torch.tensor(row["zeroshot_plus"]), counts_less_mass, weight, k, support)
        restored = counts_to_labels(counts.numpy(), k, method.zeroshot_plus.rounding)
        gain = label_accuracy(restored, row["labels"], classes) - label_floor(row["labels"], classes)
        cells.setdefault((row["checkpoint"], k), []).append(gain)
    return {cell: float(np.mean(values)) for cell, values in cells.items()}


def setting(text: str) -> tuple[float, ...]:
    """shrink:sharpness:mass_power:present_share:residual."""
    values = tuple(float(x) for x in text.split(":"))
    if len(values) != 5:
        raise SystemExit(f"a setting is shrink:sharpness:mass_power:present_share:residual, got {text}")
    return values


def group(victim: str) -> str:
    """A cell's group: its ``--set`` overrides and the stage of a `deepleak train` checkpoint
    (epoch_N.pt: untrained N <= 2 or an untrained init, mid 3-5, trained from 10)."""
    checkpoint, *overrides = victim.split(" ")
    epoch = re.search(r"epoch_(\d+)\.pt$", checkpoint)
    stage = "untrained" if epoch is None or int(epoch[1]) <= 2 else "mid" if int(epoch[1]) <= 5 else "trained"
    return " ".join([stage, *overrides])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", default="dlg", help="comma-separated checkpoint paths; dlg: untrained")
    parser.add_argument("--ks", default="16,32,64")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--set", action="append", default=[], help="a config override (e.g. --set=model=resnet18)")
    parser.add_argument("--shrink", default="0.2,0.3,0.4")
    parser.add_argument("--sharpness", default="2,4")
    parser.add_argument("--mass-power", default="0,1")
    parser.add_argument("--present-share", default="0,0.5,1")
    parser.add_argument("--residual", default="0.1,0.2")
    parser.add_argument("--show", default="",
                        help="settings shrink:sharpness:mass_power:present_share:residual to print per cell and group")
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
    grid = list(itertools.product(*([float(x) for x in values.split(",")]
                                    for values in (args.shrink, args.sharpness, args.mass_power, args.present_share,
                                                   args.residual))))
    scored = {cfg: gains(rows, *cfg) for cfg in grid}
    ranked = sorted(scored, key=lambda cfg: -np.mean(list(scored[cfg].values())))
    print(f"{len(rows)} trials, {len(next(iter(scored.values())))} cells; gain = label accuracy - label floor\n")
    print("| shrink | sharpness | mass_power | present_share | residual | mean gain | min gain |\n"
          "|--:|--:|--:|--:|--:|--:|--:|")
    for cfg in ranked[:args.top]:
        values = list(scored[cfg].values())
        print("| %g | %g | %g | %g | %g | %+.4f | %+.4f |" % (*cfg, np.mean(values), np.min(values)))
    shown = [ranked[0]] + [setting(text) for text in args.show.split(",") if text]
    for cfg in shown:
        scored.setdefault(cfg, gains(rows, *cfg))
    confidence = {}
    for row in rows:
        confidence.setdefault((row["checkpoint"], row["k"]), []).append(row["confidence"])
    names = " | ".join(":".join("%g" % x for x in cfg) for cfg in shown)
    print(f"\n| checkpoint | K | mean c | {names} |\n|---|--:|--:|" + "--:|" * len(shown))
    for cell in scored[shown[0]]:
        print(f"| {cell[0]} | {cell[1]} | {np.mean(confidence[cell]):.2f} | "
              + " | ".join("%+.3f" % scored[cfg][cell] for cfg in shown) + " |")
    print(f"\n| group (cells) | {names} |\n|---|" + "--:|" * len(shown))  # mean / worst cell
    groups = sorted({group(cell[0]) for cell in scored[shown[0]]})
    for name in groups:
        cells = [cell for cell in scored[shown[0]] if group(cell[0]) == name]
        print(f"| {name} ({len(cells)}) | " + " | ".join(
            "%+.4f / %+.3f" % (np.mean([scored[cfg][c] for c in cells]), min(scored[cfg][c] for c in cells))
            for cfg in shown) + " |")


if __name__ == "__main__":
    main()
