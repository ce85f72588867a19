"""FedAvgReplay vs pseudo-gradient reconstruction on the same FedAvg clients, through the task code.

    OMP_NUM_THREADS=1 python scripts/fedavg_psnr.py [--trials 20] [--iterations 100] [extra overrides]

Default setting (docs/fedavg.md, Replay against the pseudo-gradient route): LeNet (default width 32), sample set,
N = 8, B = 4, E = 2, eta = 0.01, labels restored by fedavg_fitted, 100 L-BFGS steps; about
2 h on one core for 20 trials (the replay learns the batch order first). Both routes see the
same trials (same seeds). Prints label accuracy and mean PSNR per route and the per-trial
PSNR difference; ``labels=oracle`` as an extra override isolates the routes from the labels,
``labels=fedavg_fitted_search`` gives the second table of docs/fedavg.md (0.9625 of the labels right).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from deepleak.config import config_dir, register
from deepleak.tasks.attack import run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--routes", default="geng,fedavg_replay")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(1)
    register()
    base = ["scenario=fedavg", "batch_size=8", "scenario.local_batch_size=4", "scenario.epochs=2", "scenario.lr=0.01",
            f"trials={args.trials}", "save_images=false", f"attack.iterations={args.iterations}", "labels=fedavg_fitted",
            *args.overrides]
    results = {}
    for route in args.routes.split(","):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
            cfg = compose(config_name="config", overrides=[f"attack={route}", *base])
        with tempfile.TemporaryDirectory() as tmp:
            result = run(cfg, Path(tmp))
        results[route] = result
        s = result["summary"]
        print(f"{route}: label accuracy {s['label_accuracy']['mean']:.3f}, PSNR {s['psnr_mean']['mean']:.2f} "
              f"+- {s['psnr_mean']['std']:.2f} dB, SSIM {s['ssim_mean']['mean']:.3f}, "
              f"{s['attack_seconds']['mean']:.1f} s/trial", flush=True)
    routes = list(results)
    if len(routes) == 2:
        a, b = (np.array([t["psnr_mean"] for t in results[r]["per_trial"]]) for r in routes)
        print(f"{routes[1]} - {routes[0]}: {np.mean(b - a):+.2f} dB mean, {np.median(b - a):+.2f} dB median, "
              f"better on {int((b > a).sum())}/{len(a)} trials")
    print("overrides:", " ".join(base), file=sys.stderr)


if __name__ == "__main__":
    main()
