"""Performance of deepleak's attack step, against a plain training step and breaching 0.1.2.

    OMP_NUM_THREADS=1 python scripts/bench.py                  # every table (about 10 min on 2 CPU cores)
    OMP_NUM_THREADS=1 python scripts/bench.py --quick          # tiny cases, seconds: a smoke run
    python scripts/bench.py --device cuda --threads 8          # the same tables on a GPU
    python scripts/bench.py --sections step,throughput --repeats 7
    OMP_NUM_THREADS=1 python scripts/bench.py --section quality --quick   # PSNR against wall time, seconds

Every number of a table comes from this process and this run, so ratios compare like with
like on a shared machine:

- **step**: for each case, the median over ``--repeats`` of the time per step of
  1. a plain forward + backward (the victim's own training step, same model and batch);
  2. deepleak's Inverting Gradients attack (``attack=ig``: 1 - cosine + TV, Adam on signed
     gradients, box, step decay; one restart), timed through the public
     ``GradientMatching.reconstruct`` at two iteration counts and differenced, so model
     copy and scoring cancel out; and the same with the fast opt-in settings (FD column):
     ``attack/image_gradient=finite_difference attack.conv_kernels=auto``;
  3. breaching 0.1.2's optimisation-based attacker with its ``invertinggradients`` config,
     driven with our model, our shared gradient and the same labels (its data and model
     downloads are never touched), timed the same way through its trial loop.
  Ratios are taken per repeat, then the median. Peak memory of each runs in a subprocess
  (peak RSS growth on CPU, peak allocated CUDA memory on a GPU).
- **fedavg**: FedAvg replay (one evaluation: E x ceil(N/B) simulated SGD steps forward and
  the checkpointed reverse pass) per simulated step, and its peak memory, at E = 1, 5, 10.
- **labels**: zero-shot label restoration (labels only) at K = 64, 1024, 4096 on LeNet.
- **throughput**: reconstructions per minute of LeNet batch 8 with 16 restarts, restarts
  one after another (``GradientMatching``) and as one batched computation
  (``deepleak.attacks.engine.batched_restarts``).
- **quality** (not in the default ``--sections``; scripts/bench_quality.py): PSNR against
  attack wall time for deepleak's ``geng``, ``ig`` and ``gradinversion`` (exact and FD
  settings) and breaching's ``invertinggradients`` on the same batches, models, gradients and
  true labels, at wall-clock budgets (``--budgets``) and equal iteration counts
  (``--iterations``); a markdown table and a PNG (``--figure``).

On CPU the clock is the thread's CPU time when torch runs one thread (``--clock auto``):
another process on the same cores then does not leak into the figures. With more threads,
or on a GPU (synchronised), it is wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import warnings

import torch
import torch.nn.functional as F

warnings.filterwarnings("ignore", category=FutureWarning)  # breaching's torch.jit.script
warnings.filterwarnings("ignore", category=UserWarning, module="hydra")
warnings.filterwarnings("ignore", message="\nThe version_base parameter is not specified")  # breaching's hydra.initialize
os.environ.setdefault("TQDM_DISABLE", "1")  # the attacks' progress bars (read when tqdm is imported)

MODELS = {
    "lenet": {"_target_": "deepleak.models.LeNet", "width": 32, "activation_fn": "sigmoid", "init_scale": 0.5},
    "resnet18": {"_target_": "deepleak.models.ResNet18", "width": 64, "activation_fn": "sigmoid"},
    "resnet18_imagenet": {"_target_": "deepleak.models.ResNet18ImageNet", "width": 64, "activation_fn": "relu"},
}
NAMES = {"lenet": "LeNet", "resnet18": "ResNet-18 (CIFAR)", "resnet18_imagenet": "ResNet-18 (ImageNet)"}
NUM_CLASSES = 10


@dataclass(frozen=True)
class Case:
    model: str
    pixels: int
    batch: int
    steps: int  # attack steps per timed run


FULL_CASES = [
    Case("lenet", 32, 1, 20), Case("lenet", 32, 8, 20), Case("lenet", 32, 64, 5),
    Case("resnet18", 32, 1, 4), Case("resnet18", 32, 8, 2), Case("resnet18_imagenet", 224, 1, 2),
]
QUICK_CASES = [Case("lenet", 16, 2, 3)]


# ---------------------------------------------------------------------------- clocks
class Clock:
    """``cpu``: this thread's CPU time (exact for one torch thread on CPU); ``wall``: wall
    time, after synchronising the GPU."""

    def __init__(self, kind: str, device: torch.device) -> None:
        self.kind, self.device = kind, device

    def __call__(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.thread_time() if self.kind == "cpu" else time.perf_counter()

    def time(self, fn: Callable[[], object]) -> float:
        start = self()
        fn()
        return self() - start


def per_step(clock: Clock, run: Callable[[int], object], steps: int, differenced: bool) -> float:
    """Seconds per step of ``run(n)`` (n steps). ``differenced``: (t(1 + steps) - t(1)) / steps,
    which cancels whatever ``run`` does once per call (setup, final scoring)."""
    if not differenced:
        return clock.time(lambda: run(steps)) / steps
    return (clock.time(lambda: run(1 + steps)) - clock.time(lambda: run(1))) / steps


# ---------------------------------------------------------------------------- cases
def observe(model_key: str, pixels: int, batch: int, device: torch.device, seed: int = 0):
    """(observation, labels, images) of a FedSGD client with ``batch`` random images."""
    from deepleak.models import build_model
    from deepleak.scenarios import FedSGD, PrivateBatch

    shape = (3, pixels, pixels)
    model = build_model(MODELS[model_key], NUM_CLASSES, shape, seed=seed).to(device)
    # Not the attack's seed 0: a restart drawn from the same generator would start at the truth.
    generator = torch.Generator().manual_seed(10_000 + seed)
    images = torch.rand(batch, *shape, generator=generator).to(device)
    labels = (torch.arange(batch) % NUM_CLASSES).to(device)
    observation = FedSGD().observe(model, PrivateBatch(images, labels), NUM_CLASSES)
    return observation, labels, images


def ig_attack(iterations: int, restarts: int = 1, image_gradient=None):
    """deepleak's Inverting Gradients recipe (conf/attack/ig.yaml) with its class defaults;
    ``image_gradient``: None (exact double backward) or a deepleak.attacks.engine.image_gradient route."""
    from deepleak.attacks import GradientMatching
    from deepleak.attacks.parts.distance import Cosine
    from deepleak.attacks.parts.prior import TotalVariation
    from deepleak.attacks.parts.scheduler import step_decay

    return GradientMatching(
        Cosine(), functools.partial(torch.optim.Adam, lr=0.1), priors={"tv": TotalVariation(0.2)},
        scheduler=functools.partial(step_decay, gamma=0.1), iterations=iterations, restarts=restarts,
        signed=True, box=True, image_gradient=image_gradient,
    )


def plain_runner(observation, labels, images) -> Callable[[int], None]:
    """n plain training steps of the victim (forward + backward to the parameters)."""
    import copy

    from deepleak.scenarios.recipe import set_bn_mode

    model = set_bn_mode(copy.deepcopy(observation.model), observation.recipe.bn_mode)

    def run(n: int) -> None:
        for _ in range(n):
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(images), labels).backward()

    return run


def deepleak_runner(observation, labels, finite_difference: bool = False) -> Callable[[int], None]:
    """n steps of deepleak's ig attack; ``finite_difference``: the fast opt-in settings, the
    forward-difference image gradient and ``conv_kernels=auto`` (raises DeepleakError on a
    victim it refuses, e.g. SELU)."""
    from deepleak.attacks.engine.image_gradient import FiniteDifference

    attack = ig_attack(1, image_gradient=FiniteDifference() if finite_difference else None)
    if finite_difference:
        attack.conv_kernels = "auto"
        # The self-check refuses a victim with unfrozen kinks here. auto's choice is then kept:
        # its timing at every reconstruction is a one-time cost whose length depends on what
        # it tries, which the differencing of two runs would not cancel.
        attack.conv_kernels = attack.reconstruct(observation, labels, seed=0).extras["conv_kernels"]
    elif not fast_path_integrated(attack, observation):
        attack.prepare = _with_fast_double_backward(attack.prepare)

    def run(n: int) -> None:
        attack.iterations = n
        attack.reconstruct(observation, labels, seed=0)

    return run


def fast_path_integrated(attack, observation) -> bool:
    """Whether ``attack.prepare`` already gives a model with deepleak.attacks.engine.step's fast
    convolutions where they apply (wide layers)."""
    from torch import nn

    from deepleak.attacks.engine.step import MIN_CHANNELS

    model = attack.prepare(observation)[0]
    return not any(type(m) is nn.Conv2d and m.in_channels >= MIN_CHANNELS and "forward" not in vars(m)
                   for m in model.modules())


def _with_fast_double_backward(prepare):
    """GradientMatching.prepare followed by step.fast_double_backward on its model copy."""
    from deepleak.attacks.engine.step import fast_double_backward

    def wrapped(observation):
        model, target, device = prepare(observation)
        return fast_double_backward(model), target, device

    return wrapped


def breaching_available() -> str | None:
    """None when breaching 0.1.2 imports, else why not."""
    import importlib

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # its torch.jit.script, deprecated in torch
            importlib.import_module("breaching")
    except Exception as error:  # ImportError, or a broken install
        return f"breaching not installed ({type(error).__name__}); pip install breaching==0.1.2 --no-deps"
    return None


@dataclass
class BreachingTrial:
    """breaching's OptimizationBasedAttacker, prepared on our model, gradient and labels:
    ``attacker``, and what its ``_run_trial`` takes (its reconstruction models, the shared
    data, the labels, its stats)."""

    attacker: object
    rec_models: list
    shared: list
    labels: torch.Tensor
    stats: dict
    shipped_iterations: int  # its config's optim.max_iterations (24 000 for invertinggradients)

    def run(self, iterations: int) -> torch.Tensor:
        """One trial of ``iterations`` through breaching's own loop; its answer (its best
        candidate by its objective), (K, C, H, W)."""
        self.attacker.cfg.optim.max_iterations = iterations
        return self.attacker._run_trial(self.rec_models, self.shared, self.labels, self.stats, 0)


def prepare_breaching(observation, labels, device: torch.device, overrides: tuple[str, ...] = ()) -> BreachingTrial:
    """breaching 0.1.2's ``invertinggradients`` attacker (cosine + TV, Adam on signed
    gradients, box, step-lr) with its config's ``overrides``, on our model (batch norm as the
    client ran it), our shared gradient and ``labels``; its data and model downloads are
    never touched."""
    import types

    import breaching
    from hydra.core.global_hydra import GlobalHydra

    from deepleak.scenarios.recipe import set_bn_mode

    GlobalHydra.instance().clear()
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Hydra's note on its missing version_base
        cfg = breaching.get_attack_config("invertinggradients", overrides=["optim.callback=1000000000", *overrides])
    GlobalHydra.instance().clear()
    logging.getLogger("breaching").setLevel(logging.WARNING)
    model = set_bn_mode(observation.model, observation.recipe.bn_mode)
    attacker = breaching.attacks.prepare_attack(model, torch.nn.CrossEntropyLoss(), cfg,
                                                dict(device=device, dtype=torch.float))
    recipe = observation.recipe
    bn_train = recipe.bn_mode == "train"
    payload = [{
        "parameters": [p.detach() for p in observation.model.parameters()],
        # None: the user trains with batch statistics, as deepleak's bn_mode=train.
        "buffers": None if bn_train else [b.detach() for b in observation.model.buffers()],
        "metadata": types.SimpleNamespace(shape=recipe.image_shape, modality="vision"),
    }]
    shared = [{
        "gradients": [g.detach() for g in observation.gradient],
        "buffers": None,
        "metadata": {"num_data_points": len(labels), "labels": labels.clone(), "local_hyperparams": None},
    }]
    rec_models, rec_labels, stats = attacker.prepare_attack(payload, shared)
    return BreachingTrial(attacker, rec_models, shared, rec_labels, stats, int(cfg.optim.max_iterations))


def breaching_runner(observation, labels, device: torch.device) -> Callable[[int], None]:
    """breaching's attacker at its shipped config (TV scale 0.2, as deepleak's ig); run(n) = one
    trial of n iterations through its own loop."""
    trial = prepare_breaching(observation, labels, device)
    return trial.run


# ---------------------------------------------------------------------------- memory
def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def hwm_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure_peak(device: torch.device, fn: Callable[[], object]) -> float:
    """Peak memory (MB) that ``fn`` adds: CUDA peak allocated, or CPU peak RSS growth (the
    peak is reset first, through /proc/self/clear_refs)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    import ctypes
    import gc

    # Start from a heap without free pages (glibc's malloc_trim), so that the growth counts
    # every page fn needs, not only those beyond what earlier frees left in the heap.
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    base = rss_mb()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    fn()
    return hwm_mb() - base


def probe(args) -> None:
    """Child process: print the peak memory of one measurement as JSON."""
    kind, rest = args.probe[0], args.probe[1:]
    device = torch.device(args.device)
    if kind in ("plain", "deepleak", "deepleak_fd", "breaching"):
        model_key, pixels, batch = rest[0], int(rest[1]), int(rest[2])
        observation, labels, images = observe(model_key, pixels, batch, device)
        run = {"plain": lambda: plain_runner(observation, labels, images),
               "deepleak": lambda: deepleak_runner(observation, labels),
               "deepleak_fd": lambda: deepleak_runner(observation, labels, finite_difference=True),
               "breaching": lambda: breaching_runner(observation, labels, device)}[kind]()
        run(1)  # warm-up: one-time lazy initialisation (kernels, imports) is not the attack's memory
        peak = measure_peak(device, lambda: run(3))
    elif kind in ("replay", "replay_fd"):
        model_key, epochs, n, b = rest[0], int(rest[1]), int(rest[2]), int(rest[3])
        evaluate = replay_setup(model_key, epochs, n, b, device, finite_difference=kind == "replay_fd")[0]
        evaluate()  # warm-up, as above
        peak = measure_peak(device, evaluate)
    else:
        raise SystemExit(f"unknown probe {kind}")
    print(json.dumps({"peak_mb": peak}))


def peak_in_child(args, *probe_args: str) -> float | None:
    """Run one probe in a fresh interpreter (peak RSS is per process); None if it failed."""
    command = [sys.executable, os.path.abspath(__file__), "--device", args.device, "--threads", str(args.threads),
               "--probe", *probe_args]
    done = subprocess.run(command, capture_output=True, text=True)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)["peak_mb"]
    print(f"  (memory probe {' '.join(probe_args)} failed: {done.stderr.strip().splitlines()[-1:]})", file=sys.stderr)
    return None


# ---------------------------------------------------------------------------- sections
def fmt_ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.2f}"


def fmt_mb(mb: float | None) -> str:
    return "-" if mb is None else f"{mb:.0f}"


def section_step(args, device: torch.device, clock: Clock, cases: list[Case]) -> None:
    from deepleak.errors import DeepleakError

    skip = breaching_available()
    print("\n### Attack step vs plain training step and breaching 0.1.2\n")
    print("Times in ms per step (median of repeats); ratios per repeat, then the median.\n")
    print("| model | px | batch | plain fwd+bwd | deepleak step | deepleak / plain | deepleak FD step | FD / plain | "
          "breaching step | deepleak / breaching | FD / breaching | peak MB plain | peak MB deepleak | peak MB FD | "
          "peak MB breaching |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    refused = {}
    for case in cases:
        observation, labels, images = observe(case.model, case.pixels, case.batch, device)
        runners = {"plain": (plain_runner(observation, labels, images), False),
                   "deepleak": (deepleak_runner(observation, labels), True)}
        try:
            runners["deepleak_fd"] = (deepleak_runner(observation, labels, finite_difference=True), True)
        except DeepleakError as error:
            refused[NAMES[case.model]] = str(error)
        if skip is None:
            runners["breaching"] = (breaching_runner(observation, labels, device), True)
        for run, _ in runners.values():  # warm-up: allocator, kernels, lazy imports
            run(1)
            run(2)
        times: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(args.repeats):
            for name, (run, differenced) in runners.items():
                times[name].append(per_step(clock, run, case.steps, differenced))
        med = {name: statistics.median(values) for name, values in times.items()}
        def ratio(a: str, b: str) -> str:
            if a not in times or b not in times:
                return "-"
            return f"{statistics.median(x / y for x, y in zip(times[a], times[b])):.2f}x"

        memory = {}
        if not args.no_memory:
            for name in runners:
                memory[name] = peak_in_child(args, name, case.model, str(case.pixels), str(case.batch))
        print(f"| {NAMES[case.model]} | {case.pixels} | {case.batch} | {fmt_ms(med['plain'])} | "
              f"{fmt_ms(med['deepleak'])} | {ratio('deepleak', 'plain')} | {fmt_ms(med.get('deepleak_fd'))} | "
              f"{ratio('deepleak_fd', 'plain')} | {fmt_ms(med.get('breaching'))} | {ratio('deepleak', 'breaching')} | "
              f"{ratio('deepleak_fd', 'breaching')} | {fmt_mb(memory.get('plain'))} | {fmt_mb(memory.get('deepleak'))} | "
              f"{fmt_mb(memory.get('deepleak_fd'))} | {fmt_mb(memory.get('breaching'))} |", flush=True)
    for name, reason in refused.items():
        print(f"\nFD columns of {name}: refused: {reason}")
    if skip is not None:
        print(f"\nbreaching columns skipped: {skip}")
    models = {case.model: case for case in cases}.values()
    if not all(fast_path_integrated(ig_attack(1), observe(c.model, c.pixels, 2, device)[0]) for c in models):
        print("\n(deepleak step: GradientMatching with deepleak.attacks.engine.step.fast_double_backward applied to "
              "its model copy by this bench; GradientMatching.prepare does not apply it yet)")


def replay_setup(model_key: str, epochs: int, n: int, b: int, device: torch.device, finite_difference: bool = False):
    """(evaluate(), simulated steps T) of one FedAvg replay evaluation; ``finite_difference``:
    reverse steps by first-order differences (a fixed step: the cost does not depend on it)."""
    from deepleak.attacks.parts.distance import L2
    from deepleak.attacks.engine.replay_client import Client
    from deepleak.attacks.fedavg_replay import FedAvgReplay, make_schedule
    from deepleak.attacks.engine.image_gradient import FiniteDifference
    from deepleak.models import build_model
    from deepleak.scenarios import FedAvg, PrivateBatch

    pixels = 32
    model = build_model(MODELS[model_key], NUM_CLASSES, (3, pixels, pixels), seed=0).to(device)
    generator = torch.Generator().manual_seed(0)
    batch = PrivateBatch(torch.rand(n, 3, pixels, pixels, generator=generator).to(device),
                         (torch.arange(n) % NUM_CLASSES).to(device))
    lr = 1e-3
    observation = FedAvg(local_batch_size=b, epochs=epochs, lr=lr).observe(model, batch, NUM_CLASSES)
    schedule = [(i.to(device), y) for i, y in
                make_schedule(batch.labels, epochs, b, torch.Generator().manual_seed(1), copies=False)]
    start = [p.detach() for p in observation.model.parameters()]
    target = [g.to(device) for g in observation.gradient_view().gradient]
    dummies = torch.rand(n, 3, pixels, pixels, generator=generator).to(device)
    client = Client(observation.model, lr, schedule, finite_difference=FiniteDifference(step=5e-6) if finite_difference else None)
    replay = FedAvgReplay(L2(), torch.optim.LBFGS)
    return (lambda: replay.weight_distance(client, start, dummies, target)), len(schedule)


def section_fedavg(args, device: torch.device, clock: Clock) -> None:
    settings = [("lenet", 8, 2), ("resnet18", 2, 2)] if not args.quick else [("lenet", 4, 2)]
    epochs_list = (1, 5, 10) if not args.quick else (1, 2)
    print("\n### FedAvg replay (one evaluation: forward replay + checkpointed reverse pass)\n")
    print("Reverse steps by double backward (exact, default) and by finite differences (FD).\n")
    print("| model | N | B | E | steps T | ms per simulated step | FD ms per step | FD / exact | peak MB | "
          "peak vs E = 1 | FD peak MB | FD peak vs E = 1 |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for model_key, n, b in settings:
        first: dict[str, float | None] = {}
        for epochs in epochs_list:
            seconds, peak, relative = {}, {}, {}
            for kind in ("replay", "replay_fd"):
                evaluate, steps = replay_setup(model_key, epochs, n, b, device, finite_difference=kind == "replay_fd")
                evaluate()
                repeats = max(1, min(args.repeats, 3))
                seconds[kind] = statistics.median(clock.time(evaluate) for _ in range(repeats)) / steps
                peak[kind] = None if args.no_memory else peak_in_child(args, kind, model_key, str(epochs), str(n), str(b))
                first.setdefault(kind, peak[kind])
                relative[kind] = "-" if peak[kind] is None or not first[kind] else f"{peak[kind] / first[kind]:.2f}x"
            print(f"| {NAMES[model_key]} | {n} | {b} | {epochs} | {steps} | {fmt_ms(seconds['replay'])} | "
                  f"{fmt_ms(seconds['replay_fd'])} | {seconds['replay_fd'] / seconds['replay']:.2f}x | "
                  f"{fmt_mb(peak['replay'])} | {relative['replay']} | {fmt_mb(peak['replay_fd'])} | {relative['replay_fd']} |",
                  flush=True)


def section_labels(args, device: torch.device, clock: Clock) -> None:
    from deepleak.labels import ZeroShotPlus

    sizes = (64, 1024, 4096) if not args.quick else (8, 64)
    print("\n### Labels only: zero-shot restoration (labels=zeroshot_plus, the default) on LeNet (32 px, 10 classes)\n")
    print("| K | restoration s (median) | client gradient s | label accuracy |")
    print("|--:|--:|--:|--:|")
    method = ZeroShotPlus()
    for k in sizes:
        started = clock()
        observation, labels, _ = observe("lenet", 32, k, device)
        client = clock() - started
        method.restore(observation)
        seconds = statistics.median(clock.time(lambda: method.restore(observation)) for _ in range(3))
        restored = method.restore(observation)
        truth = torch.bincount(labels.cpu(), minlength=NUM_CLASSES)
        accuracy = float(torch.minimum(torch.bincount(restored, minlength=NUM_CLASSES), truth).sum()) / k
        print(f"| {k} | {seconds:.3f} | {client:.3f} | {accuracy:.3f} |", flush=True)


def section_throughput(args, device: torch.device, clock: Clock) -> None:
    from deepleak.attacks.engine.batched_restarts import reconstruct_batched
    from deepleak.attacks.engine.image_gradient import FiniteDifference

    batch, restarts, steps = (8, 16, args.throughput_steps) if not args.quick else (2, 3, 3)
    observation, labels, _ = observe("lenet", 32, batch, device)
    # The ceiling of any batching: one restart on all R x K images as a single batch (the same
    # arithmetic per image, no per-restart work at all).
    big_observation, big_labels, _ = observe("lenet", 32, batch * restarts, device)

    def arm(count: int, route: str, batched: bool, ceiling: bool):
        """A run of the attack with ``count`` steps."""
        attack = ig_attack(count, restarts=1 if ceiling else restarts,
                           image_gradient=FiniteDifference() if route == "FD" else None)
        if ceiling:
            return lambda: attack.reconstruct(big_observation, big_labels, seed=0)
        if batched:
            return lambda: reconstruct_batched(attack, observation, labels, seed=0)
        return lambda: attack.reconstruct(observation, labels, seed=0)

    # (name, route, batched, ceiling); the finite-difference runs include their start-up calibration.
    kinds = (
        ("one after another", "exact", False, False),
        ("batched (vmap)", "exact", True, False),
        ("one after another", "FD", False, False),
        ("batched (vmap)", "FD", True, False),
        (f"ceiling: one restart of batch {batch * restarts}", "exact", False, True),
    )
    # Each arm at ``steps`` and at 3 x ``steps``: the difference over 2 x ``steps`` is the cost
    # per step of a long attack, without what a run costs once (set-up, the FD calibration,
    # the final scoring of every restart).
    runs = [{count: arm(count, route, batched, ceiling) for count in (steps, 3 * steps)}
            for _, route, batched, ceiling in kinds]
    for run in runs:
        run[steps]()  # warm-up
    short: list[list[float]] = [[] for _ in kinds]
    per_step: list[list[float]] = [[] for _ in kinds]
    for _ in range(max(1, min(args.repeats, 3))):
        for values, steady, run in zip(short, per_step, runs):
            values.append(clock.time(run[steps]))
            steady.append((clock.time(run[3 * steps]) - values[-1]) / (2 * steps))
    print(f"\n### Throughput: LeNet batch {batch}, {restarts} restarts of {steps} `ig` steps\n")
    print(f"Per attack: runs of {steps} steps, start-up included. Per step: the difference between "
          f"runs of {3 * steps} and {steps} steps, over {2 * steps} steps (a long attack).\n")
    print("| restarts run | image gradient | s per attack | attacks / min | vs one after another, same route "
          "| vs one after another, exact | ms per step | per step vs one after another, same route "
          "| per step vs one after another, exact |")
    print("|---|---|--:|--:|--:|--:|--:|--:|--:|")
    baseline = {route: index for index, (name, route, _, _) in enumerate(kinds) if name == "one after another"}

    def ratio(values: list[list[float]], base: int, index: int) -> str:
        return f"{statistics.median(b / v for b, v in zip(values[base], values[index])):.2f}x"

    for index, (name, route, _, _) in enumerate(kinds):
        seconds = statistics.median(short[index])
        print(f"| {name} | {route} | {seconds:.2f} | {60 / seconds:.2f} "
              f"| {ratio(short, baseline[route], index)} | {ratio(short, baseline['exact'], index)} "
              f"| {1e3 * statistics.median(per_step[index]):.1f} "
              f"| {ratio(per_step, baseline[route], index)} | {ratio(per_step, baseline['exact'], index)} |", flush=True)


def quality_module():
    """scripts/bench_quality.py, loaded from beside this file (scripts/ is no package)."""
    import importlib.util

    name = "deepleak_bench_quality"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                                         "bench_quality.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[name]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    return f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, torch {torch.__version__}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--clock", choices=("auto", "cpu", "wall"), default="auto")
    parser.add_argument("--sections", "--section", default="step,fedavg,labels,throughput",
                        help="comma-separated: step, fedavg, labels, throughput, quality (not in the default)")
    parser.add_argument("--models", default="", help="comma-separated subset of " + ",".join(MODELS)
                        + " (quality: lenet32, lenet64, resnet18)")
    quality = parser.add_argument_group("quality section (scripts/bench_quality.py)")
    quality.add_argument("--batches", default="", help="batch sizes (default 1,4)")
    quality.add_argument("--budgets", default=None, help="wall-clock budgets in s (default 1,3,10,30; '' for none)")
    quality.add_argument("--iterations", default=None, help="equal iteration counts (default 100,1000; '' for none)")
    quality.add_argument("--methods", default="", help="default geng_plus,geng_plus_fd,geng,geng_fd,ig,ig_fd,gradinversion,"
                         "gradinversion_fd,breaching; also breaching_planned (its schedule planned for the budget), ig_tv1e-4, "
                         "breaching_tv1e-4 (ig-parity diagnostics); with --scenario fedavg: fedavg_replay, "
                         "fedavg_replay_fd, pseudo_gradient")
    quality.add_argument("--figure", default="outputs/bench/quality.png", help="PNG of PSNR against seconds")
    quality.add_argument("--scenario", default="fedsgd", help="fedsgd | fedavg (the shipped FedAvg client: N = batch, "
                         "B 2, E 2, eta 0.01; methods fedavg_replay,pseudo_gradient, budgets 15,30,60,120, batch 4)")
    parser.add_argument("--throughput-steps", type=int, default=20)
    parser.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    parser.add_argument("--quick", action="store_true", help="tiny cases for a smoke run")
    parser.add_argument("--probe", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    from deepleak.runtime import resolve_device

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    args.device = str(device)
    if args.probe:
        probe(args)
        return
    clock_kind = args.clock
    if clock_kind == "auto":
        clock_kind = "cpu" if device.type == "cpu" and args.threads == 1 else "wall"
    clock = Clock(clock_kind, device)
    if args.quick:
        args.repeats = min(args.repeats, 2)
    cases = QUICK_CASES if args.quick else FULL_CASES
    if args.models:
        cases = [c for c in cases if c.model in args.models.split(",")]
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"machine: {machine()}")
    print(f"device: {device} ({device_name}), torch threads {torch.get_num_threads()}, clock {clock_kind}, "
          f"repeats {args.repeats}")
    sections = args.sections.split(",")
    logging.disable(logging.WARNING)  # the attacks' progress logs
    try:
        if "step" in sections:
            section_step(args, device, clock, cases)
        if "fedavg" in sections:
            section_fedavg(args, device, clock)
        if "labels" in sections:
            section_labels(args, device, clock)
        if "throughput" in sections:
            section_throughput(args, device, clock)
        if "quality" in sections:
            quality_module().section_quality(args, device, prepare_breaching, breaching_available())
    finally:
        logging.disable(logging.NOTSET)


if __name__ == "__main__":
    main()
