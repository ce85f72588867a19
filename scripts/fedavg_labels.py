"""FedAvg label accuracy over E x eta (the grid of docs/method.md, findings that shaped the defaults), methods side by side.

    OMP_NUM_THREADS=1 python scripts/fedavg_labels.py [--clients 20] [--first-client 0] [--methods pseudo,interpolated,simulated]

The DLG LeNet (width 12, U(-0.5, 0.5) init, untrained), sample set with 20 classes at 32 px,
N = 16 samples per client drawn with the `random` distribution (duplicates allowed), B = 4.
Every client is the task's trial: its own batch and model from trial_seeds(0, client).
Clients 0-19 (the default) are the ones deepleak's FedAvg methods and their margins were tuned
on; `--first-client 1000 --clients 20` gives a held-out table.
Prints one table row per (eta, E) and the prototype's figures next to them.

"pseudo" is the paper's plain zero-shot (labels=zeroshot) on the pseudo-gradient;
"interpolated" and "interp_sim_end" are Dimitrov et al.'s interpolation around it;
"interp_weights" and "start_end" (deepleak's) average the counts of deepleak's zero-shot
(labels=zeroshot_plus) at interpolated models, as when their figures were first measured.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from deepleak import metrics
from deepleak.data import SampleDataset
from deepleak.data.distributions import Random, Unique
from deepleak.labels import ZeroShot, ZeroShotPlus
from deepleak.labels.fedavg import Fitted, FittedSearch, ImageSearch, Interpolated, Mean, Search, Simulated
from deepleak.models import build_model
from deepleak.scenarios import FedAvg, PrivateBatch
from deepleak.runtime import trial_seeds

PROTOTYPE = {  # docs/method.md (findings that shaped the defaults): (pseudo, start/end)
    (0.1, 1): (0.39, 0.56), (0.1, 5): (0.19, 0.67), (0.1, 10): (0.17, 0.67),
    (0.01, 1): (0.65, 0.87), (0.01, 5): (0.37, 0.73), (0.01, 10): (0.29, 0.70),
    (0.001, 1): (0.97, 0.98), (0.001, 5): (0.75, 0.97), (0.001, 10): (0.62, 0.91),
}
METHODS = {
    "pseudo": lambda: ZeroShot(),  # the paper's method, as labels=zeroshot
    "interpolated": lambda: Interpolated(),
    "interp_weights": lambda: Interpolated(base=ZeroShotPlus(), interpolate="weights"),
    "start_end": lambda: Interpolated(base=ZeroShotPlus(), interpolate="weights", points=2),  # counts at W_0 and W_T, averaged
    "interp_sim_end": lambda: Interpolated(end="simulated"),
    "simulated": lambda: Simulated(),
    "fitted": lambda: Fitted(),
    "mean": lambda: Mean([Simulated(), Fitted()]),
    "search": lambda: Search(),
    "fitted_search": lambda: FittedSearch(),
    "image_search": lambda: ImageSearch(),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--first-client", "--first", dest="first", type=int, default=0,
                        help="first client: split a cell across jobs (--first-client 10 --clients 10) or take "
                             "held-out clients (--first-client 1000; 0-19 are the ones the methods were tuned on)")
    parser.add_argument("--methods", default="pseudo,interpolated,simulated")
    parser.add_argument("--epochs", default="1,5,10")
    parser.add_argument("--lrs", default="0.1,0.01,0.001")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--b", type=int, default=4)
    parser.add_argument("--width", type=int, default=12)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--distribution", default="random", choices=["random", "unique"])
    parser.add_argument("--init-scale", default="0.5", help="LeNet init U(-s, s); null: PyTorch's default")
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = args.methods.split(",")
    classes = args.classes
    dataset = SampleDataset(num_classes=classes, resolution=32)
    distribution = Random() if args.distribution == "random" else Unique()
    model_cfg = {"_target_": "deepleak.models.LeNet", "width": args.width, "activation_fn": "sigmoid",
                 "init_scale": None if args.init_scale == "null" else float(args.init_scale)}
    print(f"N={args.n} B={args.b}, LeNet-{args.width} (init {args.init_scale}), {classes} classes, {args.distribution} labels, "
          f"{args.clients} clients per point (clients {args.first}-{args.first + args.clients - 1}); label accuracy")
    print("| eta | E | T | " + " | ".join(names) + " | prototype pseudo / start-end |")
    print("|---|---|---|" + "---|" * len(names) + "---|")
    for lr in [float(x) for x in args.lrs.split(",")]:
        for epochs in [int(x) for x in args.epochs.split(",")]:
            scores = {name: [] for name in names}
            started = time.perf_counter()
            scenario = FedAvg(local_batch_size=args.b, epochs=epochs, lr=lr, seed=0)
            for client in range(args.first, args.first + args.clients):
                seeds = trial_seeds(0, client)
                rng = np.random.default_rng(seeds["batch"])
                indices = distribution.sample(dataset.targets, classes, args.n, rng)
                images, labels = dataset.batch(indices)
                model = build_model(model_cfg, classes, (3, 32, 32), seeds["model"])
                observation = scenario.observe(model, PrivateBatch(images, labels), classes, trial=client)
                for name in names:
                    restored = METHODS[name]().restore(observation)
                    assert len(restored) == args.n
                    scores[name].append(metrics.label_accuracy(restored, labels, classes))
            proto = PROTOTYPE.get((lr, epochs), (float("nan"),) * 2)
            cells = " | ".join(f"{np.mean(scores[n]):.3f}" for n in names)
            print(f"| {lr:g} | {epochs} | {scenario.epochs * -(-args.n // args.b)} | {cells} | "
                  f"{proto[0]:.2f} / {proto[1]:.2f} |  ({time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
