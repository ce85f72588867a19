"""Print the label-restoration figures of issue 3 as markdown tables.

Every cell is one run of the attack task (the code behind `deepleak attack`) with attack=none,
e.g. for the duplicates figure:

    deepleak attack attack=none labels=METHOD distribution=one_class_r distribution.r=R \
        batch_size=16 dataset.num_classes=20 model.width=12 trials=200

Usage (always with OMP_NUM_THREADS=1 on a shared CPU):

    python scripts/label_figures.py duplicates [--trials 200] [--methods zeroshot_plus,zeroshot,gradinversion,llg,ilrg]
        [--init-scale 0.5|null]
    python scripts/label_figures.py resnet [--trials 3] [--sizes 64,256,1024] [--classes 10,100]
        [--methods zeroshot_plus,zeroshot_plus:refine=false,ilrg]
    python scripts/label_figures.py timing [--trials 5] [--sizes 1024,4096]

Each table gives the mean label accuracy over trials, the trial count and the mean seconds of
label restoration per trial (`label_seconds`) next to the wall time per trial (which includes
building the model and computing the client's gradient).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from deepleak.errors import DeepleakError
from deepleak.tasks.attack import run

# The duplicates figure of docs/method.md (reference figures) (authors' plotting code), 0..8 duplicates.
PAPER_GRADINVERSION = [99.6, 92.7, 87.1, 81.0, 74.6, 68.1, 62.3, 55.5, 49.4]
PAPER_ZEROSHOT = [99.2, 99.0, 97.4, 99.4, 98.2, 99.2, 99.2, 98.2, 99.6]


def compose(*overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from deepleak.config import chosen_group_appends, config_dir, register

    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        return hydra_compose(config_name="config", overrides=chosen_group_appends(list(overrides)))


def method_overrides(spec: str) -> list[str]:
    """'zeroshot_plus:refine=false' -> ['labels=zeroshot_plus', 'labels.refine=false']."""
    name, *settings = spec.split(":")
    return [f"labels={name}", *(f"labels.{setting}" for setting in settings)]


def cell(*overrides: str) -> dict | None:
    """One labels-only run; returns mean accuracy, n, label seconds and wall seconds per trial,
    or None when the method refuses the setting (its one-line reason goes to stderr)."""
    cfg = compose("attack=none", "save_images=false", *overrides)
    with tempfile.TemporaryDirectory() as run_dir:
        started = time.perf_counter()
        try:
            result = run(cfg, Path(run_dir))
        except DeepleakError as error:
            print(f"refused ({' '.join(overrides)}): {error}", file=sys.stderr)
            return None
        wall = time.perf_counter() - started
    records = result["per_trial"]
    return {
        "accuracy": result["summary"]["label_accuracy"]["mean"],
        "n": len(records),
        "label_s": sum(r["label_seconds"] for r in records) / len(records),
        "wall_s": wall / len(records),
    }


def duplicates(args) -> None:
    methods = args.methods.split(",")
    rs = range(1, 10)
    init = "DLG's U(-0.5, 0.5)" if args.init_scale == "0.5" else (
        "PyTorch's default" if args.init_scale == "null" else f"U(-{args.init_scale}, {args.init_scale})")
    print(f"\nBatch 16, one class r times (r - 1 duplicates), sample set with 20 classes, untrained LeNet-12 "
          f"({init} initialisation) at 32 px, {args.trials} trials per cell: mean label accuracy (%)\n")
    print("| method | " + " | ".join(f"r={r}" for r in rs) + " | min | label s/trial |")
    print("|---" * (len(rs) + 3) + "|")
    for method in methods:
        cells = [cell(*method_overrides(method), "distribution=one_class_r", f"distribution.r={r}", "batch_size=16",
                      "dataset.num_classes=20", "model.width=12", f"model.init_scale={args.init_scale}",
                      f"trials={args.trials}", f"seed={args.seed}")
                 for r in rs]
        accs = [100 * c["accuracy"] for c in cells]
        seconds = sum(c["label_s"] for c in cells) / len(cells)
        print(f"| {method} | " + " | ".join(f"{a:.1f}" for a in accs) + f" | {min(accs):.1f} | {seconds:.4f} |",
              flush=True)
        if method == "gradinversion":
            # The paper's comparison is the slope: one label lost per duplicate (1/16).
            ideal = [accs[0] - 100 * d / 16 for d in range(len(rs))]
            print("| gradinversion, r=1 value - 100 d/16 | " + " | ".join(f"{a:.1f}" for a in ideal)
                  + f" | max gap {max(abs(a - b) for a, b in zip(accs, ideal)):.1f} | |")
    print("| paper: GradInversion | " + " | ".join(f"{a:.1f}" for a in PAPER_GRADINVERSION) + " | | |")
    print("| paper: zero-shot | " + " | ".join(f"{a:.1f}" for a in PAPER_ZEROSHOT) + " | | |")


def trial_observations(cfg, dataset, distribution, scenario, trials: int, seed: int, first: int = 0):
    """The client part of the task's run_trial for trials first .. first + trials - 1 (same
    seeds, data, model and scenario): yields (Observation, true labels, the client's seconds)."""
    import numpy as np

    from deepleak.models import build_model
    from deepleak.runtime import trial_seeds
    from deepleak.scenarios.base import PrivateBatch

    for trial in range(first, first + trials):
        started = time.perf_counter()
        seeds = trial_seeds(seed, trial)
        indices = distribution.sample(dataset.targets, dataset.num_classes, cfg.batch_size,
                                      np.random.default_rng(seeds["batch"]))
        images, labels = dataset.batch(indices)
        model = build_model(cfg.model, dataset.num_classes, tuple(dataset.image_shape), seeds["model"])
        observation = scenario.observe(model, PrivateBatch(images, labels), dataset.num_classes)
        yield observation, labels, time.perf_counter() - started


def timed_accuracy(method, observation, labels, num_classes: int, what: str) -> tuple[float, float] | None:
    """(label accuracy, seconds) of ``method`` on ``observation``; None, said on stderr, when
    the method refuses it."""
    from deepleak import metrics

    started = time.perf_counter()
    try:
        restored = method.restore(observation)
    except DeepleakError as error:
        print(f"refused ({what}): {error}", file=sys.stderr)
        return None
    seconds = time.perf_counter() - started
    return metrics.label_accuracy(restored, labels, num_classes), seconds


def side_by_side(methods: list[str], trials: int, seed: int, *overrides: str) -> dict[str, dict]:
    """Several label methods on the *same* observations: the client part of the task's
    run_trial (same seeds, data, model and scenario), then every method on its Observation.
    One client gradient per trial instead of one per method and trial (ResNet-18 at K = 1024
    costs about a minute on 2 CPU cores)."""
    import numpy as np

    from deepleak.config import make

    cfg = compose(*overrides, f"seed={seed}")
    dataset, distribution, scenario = (make(cfg[name]) for name in ("dataset", "distribution", "scenario"))
    label_methods = {}
    for m in methods:
        # "zeroshot_plus:refine=false" is labels=zeroshot_plus with labels.refine=false.
        label_methods[m] = make(compose(*method_overrides(m)).labels)
    out = {m: {"acc": [], "label_s": []} for m in methods}
    wall = []
    for observation, labels, client_seconds in trial_observations(cfg, dataset, distribution, scenario, trials, seed):
        wall.append(client_seconds)
        for name, method in label_methods.items():
            scored = timed_accuracy(method, observation, labels, dataset.num_classes, f"{name}, {' '.join(overrides)}")
            if scored is None:
                out[name]["acc"].append(float("nan"))
                continue
            out[name]["acc"].append(scored[0])
            out[name]["label_s"].append(scored[1])
    return {name: {"accuracy": float(np.mean(v["acc"])), "n": len(v["acc"]),
                   "label_s": float(np.mean(v["label_s"])) if v["label_s"] else float("nan"),
                   "client_s": float(np.mean(wall))} for name, v in out.items()}


def resnet(args) -> None:
    methods = args.methods.split(",")
    sizes = [int(k) for k in args.sizes.split(",")]
    print(f"\nUntrained ResNet-18 (sigmoid, BN train mode) at 32 px, random distribution, sample set "
          f"({args.crops} crops per class), {args.trials} trials per cell, every method on the same "
          f"observations: mean label accuracy (label s per trial); client s = building the batch, the "
          f"model and the shared gradient\n")
    print("| classes | K | " + " | ".join(methods) + " | client s/trial |")
    print("|---" * (len(methods) + 3) + "|")
    for classes in [int(c) for c in args.classes.split(",")]:
        for k in sizes:
            cells = side_by_side(methods, args.trials, args.seed, "model=resnet18", "distribution=random",
                                 f"batch_size={k}", f"dataset.num_classes={classes}",
                                 f"dataset.crops_per_class={args.crops}")
            row = [f"{c['accuracy']:.4f} (n={c['n']}, {c['label_s']:.2f} s)" for c in cells.values()]
            client = next(iter(cells.values()))["client_s"]
            print(f"| {classes} | {k} | " + " | ".join(row) + f" | {client:.1f} |", flush=True)


def timing(args) -> None:
    methods = args.methods.split(",")
    sizes = [int(k) for k in args.sizes.split(",")]
    print(f"\nLabels-only on LeNet-12 at 32 px, random distribution, 20 classes, {args.trials} trials: seconds per trial "
          f"(label restoration / whole trial)\n")
    print("| K | " + " | ".join(methods) + " |")
    print("|---" * (len(methods) + 1) + "|")
    for k in sizes:
        row = []
        for method in methods:
            c = cell(*method_overrides(method), "distribution=random", f"batch_size={k}", "dataset.num_classes=20",
                     "model.width=12", f"dataset.crops_per_class={args.crops}", f"trials={args.trials}",
                     f"seed={args.seed}")
            row.append("refused" if c is None else f"{c['label_s']:.3f} / {c['wall_s']:.2f} (acc {c['accuracy']:.3f})")
        print(f"| {k} | " + " | ".join(row) + " |", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("figure", choices=["duplicates", "resnet", "timing"])
    parser.add_argument("--trials", type=int, default=None)
    parser.add_argument("--methods", default=None)
    parser.add_argument("--sizes", default="64,256,1024")
    parser.add_argument("--classes", default="10,100")
    parser.add_argument("--crops", type=int, default=256, help="crops per class (random batches of K need K <= data set size)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init-scale", default="0.5",
                        help="duplicates: LeNet initialisation, U(-s, s) or null for PyTorch's default")
    args = parser.parse_args(argv)
    defaults = {"duplicates": (200, "zeroshot_plus,zeroshot,gradinversion,llg,ilrg"),
                "resnet": (3, "zeroshot_plus,ilrg"),
                "timing": (5, "zeroshot_plus,gradinversion,llg,ilrg")}[args.figure]
    args.trials = args.trials or defaults[0]
    args.methods = args.methods or defaults[1]
    if args.figure == "timing" and args.sizes == "64,256,1024":
        args.sizes = "1024,4096"
    torch.set_num_threads(1)  # tiny ops; intra-op threads only add overhead on a shared CPU
    {"duplicates": duplicates, "resnet": resnet, "timing": timing}[args.figure](args)


if __name__ == "__main__":
    sys.exit(main())
