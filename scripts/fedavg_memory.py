"""Peak memory of one replay evaluation (forward + reverse pass) at E x steps-per-epoch steps.

    OMP_NUM_THREADS=1 python scripts/fedavg_memory.py                # the table
    OMP_NUM_THREADS=1 python scripts/fedavg_memory.py --one lenet 10 10 checkpoint

Each setting runs in its own subprocess; the figure is its peak resident set size
(resource.getrusage maxrss) minus the RSS after the model and data were built, so it is
the memory of the replay itself. N = 2 x steps-per-epoch samples, B = 2, 32 px, 10 classes.
`unrolled` keeps the whole T-step graph (the naive way) for comparison.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def one(model_name: str, epochs: int, per_epoch: int, how: str) -> None:
    import torch

    from deepleak.attacks.parts.distance import L2
    from deepleak.attacks.engine.replay_client import Client
    from deepleak.attacks.fedavg_replay import FedAvgReplay, make_schedule
    from deepleak.models import build_model
    from deepleak.scenarios import FedAvg, PrivateBatch

    torch.set_num_threads(1)
    cfg = ({"_target_": "deepleak.models.LeNet", "width": 32, "activation_fn": "sigmoid", "init_scale": 0.5}
           if model_name == "lenet" else {"_target_": "deepleak.models.ResNet18", "width": 64, "activation_fn": "sigmoid"})
    n, b = 2 * per_epoch, 2
    model = build_model(cfg, 10, (3, 32, 32), seed=0)
    g = torch.Generator().manual_seed(0)
    batch = PrivateBatch(torch.rand(n, 3, 32, 32, generator=g), torch.randint(10, (n,), generator=g))
    obs = FedAvg(local_batch_size=b, epochs=epochs, lr=0.001).observe(model, batch, 10)
    schedule = make_schedule(batch.labels, epochs, b, torch.Generator().manual_seed(1), copies=False)
    start = [p.detach() for p in obs.model.parameters()]
    target = list(obs.gradient_view().gradient)
    dummies = torch.rand(n, 3, 32, 32, generator=g)
    base = rss_mb()
    began = time.perf_counter()
    client = Client(obs.model, 0.001, schedule)
    if how == "checkpoint":
        FedAvgReplay(L2(), torch.optim.LBFGS).weight_distance(client, start, dummies, target)
    else:
        leaf = dummies.clone().requires_grad_(True)
        weights = [w.clone().requires_grad_(True) for w in start]
        end = client.unrolled(weights, leaf)
        torch.autograd.grad(L2()([s - e for s, e in zip(weights, end)], target), [leaf])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    params = sum(p.numel() for p in start) * 4 / 2**20
    print(f"| {model_name} | {epochs} x {per_epoch} = {len(schedule)} | {how} | {peak - base:.0f} | {peak:.0f} | "
          f"{params:.1f} | {time.perf_counter() - began:.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--one", nargs=4, metavar=("MODEL", "EPOCHS", "PER_EPOCH", "HOW"))
    parser.add_argument("--settings", default="lenet:10:10:checkpoint,lenet:10:10:unrolled,lenet:1:10:unrolled,"
                                              "resnet18:1:10:checkpoint,resnet18:10:10:checkpoint,resnet18:1:10:unrolled")
    args = parser.parse_args()
    if args.one:
        one(args.one[0], int(args.one[1]), int(args.one[2]), args.one[3])
        return
    print("| model | E x steps = T | reverse pass | peak growth (MB) | peak RSS (MB) | weights (MB) | seconds |")
    print("|---|---|---|---|---|---|---|", flush=True)
    for setting in args.settings.split(","):
        model, epochs, per_epoch, how = setting.split(":")
        subprocess.run([sys.executable, __file__, "--one", model, epochs, per_epoch, how], check=False)


if __name__ == "__main__":
    main()
