"""scripts/bench.py's quality section: PSNR against attack wall time, deepleak and breaching 0.1.2.

    OMP_NUM_THREADS=1 python scripts/bench.py --section quality --quick
    OMP_NUM_THREADS=1 python scripts/bench.py --section quality --models lenet32 --batches 1,4 --budgets 1,3

Every method gets the same inputs: for each of ``--repeats`` private batches (the CLI's data
path: the embedded sample set, ``distribution=unique``, the trial's seeds), the same victim,
the same FedSGD gradient and the true labels. deepleak's recipes are composed from conf/ and
instantiated as the CLI does (``attack=ig`` etc. with their shipped defaults, plus
``attack.budget_s`` or ``attack.iterations``); breaching's ``invertinggradients`` attacker
keeps its shipped config (``--breaching-tv`` diagnostics aside).

Two kinds of row:

- **budget** (``--budgets``, seconds of wall clock): deepleak with ``attack.budget_s``;
  breaching through its own trial loop at its shipped 24 000 iterations, stopped at the same
  deadline by its own stop path (a KeyboardInterrupt raised before the first step past the
  deadline, which ``_run_trial`` catches and answers with its best candidate so far). One run
  per budget for both, each schedule planned for the tool's own iteration count, as a user
  of either would get it. The clock starts where each tool's own would: deepleak's after its
  model copy, breaching's at the call of its trial.
- **iterations** (``--iterations``): the Adam recipes with one evaluation per step (``ig``,
  its FD settings, breaching) run exactly N steps, one restart, their schedules planned for
  N: the same optimisation step for step, for ig parity. (geng's L-BFGS step runs up to 20
  evaluations and gradinversion's 3 group members: not the same unit.)

PSNR is deepleak's (``deepleak.metrics.image_metrics``) with the Hungarian pairing for both
tools (no labels passed), the mean over the batch's images; each cell is the median over the
batches with a bootstrap 95 % interval of that median (percentile, 10 000 resamples). One-time
process costs (torch's optimiser import, ``runtime.preload_optimizers``; breaching's import
and its scripted objective's first calls; kernels) are paid by a warm-up run of every method
before any clock starts.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import io
import json
import math
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

# --models: (label, overrides of conf/model)
QUALITY_MODELS = {
    "lenet32": ("LeNet width 32", ("model=lenet", "model.width=32")),
    "lenet64": ("LeNet width 64", ("model=lenet", "model.width=64")),
    "resnet18": ("ResNet-18 (CIFAR)", ("model=resnet18",)),
}
FAST = ("attack/image_gradient=finite_difference", "attack.conv_kernels=auto")
# --scenario: (the scenario's words in a row's model label, overrides of conf/scenario)
QUALITY_SCENARIOS = {
    "fedsgd": ("", ()),
    "fedavg": (", FedAvg N {batch} B 2 E 2 eta 0.01", ("scenario=fedavg",)),
}


@dataclass(frozen=True)
class Method:
    label: str
    tool: str  # deepleak | breaching
    overrides: tuple[str, ...]  # of deepleak's conf/ (attack=...), or of breaching's attack config
    steps_comparable: bool  # one evaluation per Adam step: in the equal-iteration rows


METHODS = {
    "geng_plus": Method("deepleak geng_plus (default)", "deepleak", ("attack=geng_plus",), False),
    "geng_plus_fd": Method("deepleak geng_plus FD", "deepleak", ("attack=geng_plus", *FAST), False),
    "geng": Method("deepleak geng", "deepleak", ("attack=geng",), False),
    "geng_fd": Method("deepleak geng FD", "deepleak", ("attack=geng", *FAST), False),
    "ig": Method("deepleak ig", "deepleak", ("attack=ig",), True),
    "ig_fd": Method("deepleak ig FD", "deepleak", ("attack=ig", *FAST), True),
    "gradinversion": Method("deepleak gradinversion", "deepleak", ("attack=gradinversion",), False),
    "gradinversion_fd": Method("deepleak gradinversion FD", "deepleak", ("attack=gradinversion", *FAST), False),
    "breaching": Method("breaching ig", "breaching", (), True),
    # breaching with its schedule planned for the steps that fit the budget (its step time measured
    # on the batch, outside the clock): its rate decays happen inside the budget, its best here.
    "breaching_planned": Method("breaching ig, planned for the budget", "breaching", (), False),
    # FedAvg (--scenario fedavg): the replay and the pseudo-gradient route on the client's shared weights
    "pseudo_gradient": Method("deepleak geng_plus on the pseudo-gradient", "deepleak", ("attack=geng_plus",), False),
    "fedavg_replay": Method("deepleak fedavg_replay (FedAvg default)", "deepleak", ("attack=fedavg_replay",), False),
    "fedavg_replay_fd": Method("deepleak fedavg_replay FD", "deepleak",
                               ("attack=fedavg_replay", "attack/image_gradient=finite_difference"), False),
    # ig-parity diagnostics (not in the default --methods): each tool with the other's TV weight
    # (ig's TV weight was 1e-4, the 2020 repository's CLI default, until it took breaching's 0.2).
    "ig_tv1e-4": Method("deepleak ig, TV 1e-4", "deepleak", ("attack=ig", "attack.priors.tv.weight=1e-4"), True),
    "breaching_tv1e-4": Method("breaching ig, TV 1e-4", "breaching", ("regularization.total_variation.scale=1e-4",), True),
}
DEFAULT_METHODS = "geng_plus,geng_plus_fd,geng,geng_fd,ig,ig_fd,gradinversion,gradinversion_fd,breaching"
DEFAULT_FEDAVG_METHODS = "fedavg_replay,pseudo_gradient"
BOOTSTRAP = 10_000


@dataclass
class Cell:
    """One row's measurements over the batches."""

    psnr: list[float] = field(default_factory=list)
    iterations: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)  # wall clock, what the budgets limit
    cpu: list[float] = field(default_factory=list)  # this thread's CPU time: shows what a busy machine took


# ---------------------------------------------------------------------------- config
def compose(*overrides: str):
    """deepleak's config composed as the CLI composes it (conf/config.yaml and the overrides)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from deepleak.config import chosen_group_appends, config_dir, register

    register()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
            return hydra_compose(config_name="config", overrides=chosen_group_appends(list(overrides)))
    finally:
        GlobalHydra.instance().clear()


@functools.cache
def attack_node(overrides: tuple[str, ...]):
    """The composed ``attack`` node of ``method.overrides`` (composing costs ~0.3 s: once each)."""
    return compose(*overrides).attack


def build_attack(method: Method, **values):
    """deepleak's attack for ``method``, composed from conf/ and built with
    ``deepleak.config.make`` (the CLI's path); ``values``: attack.* set as on the command
    line (``budget_s=1`` is ``attack.budget_s=1``)."""
    from omegaconf import OmegaConf

    from deepleak.config import make

    node = copy.deepcopy(attack_node(method.overrides))
    for key, value in values.items():
        OmegaConf.update(node, key, value, merge=False)
    return make(node)


def private_batches(model_overrides: tuple[str, ...], batch: int, count: int, device: torch.device):
    """``count`` (observation, images, labels, attack seed) of the CLI's trials 0 .. count - 1:
    the configured data set and distribution draw the batch, the model is built from the
    trial's model seed, the configured scenario (FedSGD, or FedAvg's shipped client with
    ``scenario=fedavg`` among the overrides) shares its update."""
    from deepleak.config import make
    from deepleak.models import build_model
    from deepleak.runtime import trial_seeds
    from deepleak.scenarios import PrivateBatch

    cfg = compose(*model_overrides, f"batch_size={batch}")
    dataset, distribution, scenario = make(cfg.dataset), make(cfg.distribution), make(cfg.scenario)
    out = []
    for trial in range(count):
        seeds = trial_seeds(cfg.seed, trial)
        indices = distribution.sample(dataset.targets, dataset.num_classes, batch, np.random.default_rng(seeds["batch"]))
        images, labels = dataset.batch(indices)
        images, labels = images.to(device), labels.to(device)
        model = build_model(cfg.model, dataset.num_classes, tuple(dataset.image_shape), seeds["model"]).to(device)
        observation = scenario.observe(model, PrivateBatch(images, labels), dataset.num_classes)
        out.append((observation, images, labels, seeds["attack"]))
    return out


# ---------------------------------------------------------------------------- runs
class Outcome(NamedTuple):
    """One attack run: its answer (K, C, H, W), iterations reached, wall and CPU seconds."""

    images: torch.Tensor
    iterations: int
    seconds: float
    cpu: float


def run_deepleak(attack, observation, labels, seed: int) -> Outcome:
    """``attack.reconstruct``, timed from the call."""
    cpu, started = time.thread_time(), time.perf_counter()
    result = attack.reconstruct(observation, labels, seed=seed)
    return Outcome(result.images, result.iterations, time.perf_counter() - started, time.thread_time() - cpu)


def run_breaching(trial, seed: int, budget_s: float | None = None, iterations: int | None = None
                  ) -> Outcome:
    """breaching's trial at its shipped iteration count until ``budget_s`` (wall clock, from
    the call), or exactly ``iterations``; its answer is its best candidate so far."""
    attacker = trial.attacker
    planned = iterations if iterations is not None else trial.shipped_iterations
    steps = [0]
    deadline = math.inf
    init_optimizer = type(attacker)._init_optimizer

    def counted(candidate):
        optimizer, scheduler = init_optimizer(attacker, candidate)
        step = optimizer.step

        def timed_step(closure):
            if time.perf_counter() >= deadline:
                # breaching's own stop: _run_trial catches it and answers its best candidate so far.
                raise KeyboardInterrupt
            loss = step(closure)
            steps[0] += 1
            return loss

        optimizer.step = timed_step
        return optimizer, scheduler

    attacker._init_optimizer = counted
    torch.manual_seed(seed)  # breaching draws its start from the global generator
    try:
        # stdout: its "Recovery interrupted" line; the warning: torch's note that the step was
        # wrapped after the scheduler was built (it is, here).
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Seems like `optimizer.step\\(\\)` has been overridden")
            cpu, started = time.thread_time(), time.perf_counter()
            deadline = started + budget_s if budget_s is not None else math.inf
            images = trial.run(planned)
            seconds, cpu = time.perf_counter() - started, time.thread_time() - cpu
    finally:
        del attacker._init_optimizer
    return Outcome(images, steps[0], seconds, cpu)


def batch_psnr(reconstruction: torch.Tensor, images: torch.Tensor) -> float:
    """deepleak's PSNR (clamped to [0, 1], Hungarian pairing), mean over the batch."""
    from deepleak import metrics

    value = metrics.image_metrics(reconstruction.detach().cpu(), images.cpu())["psnr_mean"]
    return float("nan") if value is None else value


def median_interval(values: list[float]) -> tuple[float, float, float]:
    """(median, low, high): the bootstrap (percentile) 95 % interval of the median."""
    data = np.asarray(values, dtype=np.float64)
    if len(data) == 1:
        return float(data[0]), float(data[0]), float(data[0])
    rng = np.random.default_rng(0)
    medians = np.median(data[rng.integers(0, len(data), size=(BOOTSTRAP, len(data)))], axis=1)
    return float(np.median(data)), float(np.quantile(medians, 0.025)), float(np.quantile(medians, 0.975))


# ---------------------------------------------------------------------------- the section
def parse_list(text: str, kind: Callable = float) -> list:
    return [kind(x) for x in text.split(",") if x.strip()]


Row = tuple[str, float, str]  # (kind: "budget" | "iterations", seconds or N, method name)


def section_quality(args, device: torch.device, prepare_breaching: Callable, breaching_skip: str | None) -> None:
    """Print the table, write the figure (``args.figure``) and the per-batch values beside it."""
    from deepleak.runtime import preload_optimizers

    fedavg = args.scenario == "fedavg"
    models = parse_list(args.models or ("lenet32" if args.quick or fedavg else "lenet32,lenet64,resnet18"), str)
    batches = parse_list(args.batches or ("1" if args.quick else "4" if fedavg else "1,4"), int)
    budgets = parse_list(args.budgets if args.budgets is not None else
                         ("0.05,0.2" if args.quick else "15,30,60,120" if fedavg else "1,3,10,30"))
    iterations = parse_list(args.iterations if args.iterations is not None else
                            ("5" if args.quick else "" if fedavg else "100,1000"), int)
    count = min(args.repeats, 2) if args.quick else args.repeats
    names = parse_list(args.methods or (DEFAULT_FEDAVG_METHODS if fedavg else DEFAULT_METHODS), str)
    unknown = ([m for m in models if m not in QUALITY_MODELS] + [n for n in names if n not in METHODS]
               + ([args.scenario] if args.scenario not in QUALITY_SCENARIOS else []))
    if unknown:
        raise SystemExit(f"unknown --models/--methods/--scenario: {unknown}; models {list(QUALITY_MODELS)}, "
                         f"methods {list(METHODS)}, scenarios {list(QUALITY_SCENARIOS)}")
    if fedavg and any(METHODS[n].tool == "breaching" for n in names):
        breaching_skip = "the bench drives breaching on FedSGD gradients only"
    scenario_words, scenario_overrides = QUALITY_SCENARIOS[args.scenario]
    # deepleak's attacks are composed with the scenario's overrides (breaching runs FedSGD only)
    methods = {name: dataclasses.replace(METHODS[name], overrides=(*scenario_overrides, *METHODS[name].overrides))
               if METHODS[name].tool == "deepleak" else METHODS[name]
               for name in names if breaching_skip is None or METHODS[name].tool != "breaching"}
    preload_optimizers()
    if breaching_skip is None and any(m.tool == "breaching" for m in methods.values()):
        import breaching  # noqa: F401  (its import, and its torch.jit.script, before any clock)

    print("\n### Quality: PSNR against attack wall time (deepleak vs breaching 0.1.2)\n")
    update = "FedAvg clients' weights" if fedavg else "private batches"
    print(f"{count} {update} per row (trials 0..{count - 1} of the sample set, distribution=unique, true "
          "labels). Median PSNR in dB [bootstrap 95 % interval of the median]; median iterations reached, wall "
          "seconds and this thread's CPU seconds (below the wall time on a busy machine). Budget rows: "
          "attack.budget_s (deepleak), its trial stopped at the deadline (breaching); iteration rows: exactly N "
          "steps, one restart.\n")
    print("| model | batch | method | budget | PSNR dB, median [95% interval] | iterations | wall s | CPU s |")
    print("|---|--:|---|---|---|--:|--:|--:|")
    results: dict[tuple[str, int], dict[Row, Cell]] = {}
    for model_key in models:
        model_label, model_overrides = QUALITY_MODELS[model_key]
        for batch in batches:
            label = model_label + scenario_words.format(batch=batch)
            cases = private_batches((*model_overrides, *scenario_overrides), batch, count, device)
            plan = plan_rows(methods, budgets, iterations, device, prepare_breaching)
            warm_up(methods, cases[0], device, prepare_breaching)
            cells: dict[Row, Cell] = {row: Cell() for row, _ in plan}
            for case in cases:  # every row on one batch before the next batch
                for row, run in plan:
                    outcome = run(case)
                    cell = cells[row]
                    cell.psnr.append(batch_psnr(outcome.images, case[1]))
                    cell.iterations.append(outcome.iterations)
                    cell.seconds.append(outcome.seconds)
                    cell.cpu.append(outcome.cpu)
            order = list(methods)
            results[(label, batch)] = dict(sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1], order.index(kv[0][2]))))
            for (kind, value, name), cell in results[(label, batch)].items():
                median, low, high = median_interval(cell.psnr)
                budget = f"{value:g} s" if kind == "budget" else f"{value:g} it."
                print(f"| {label} | {batch} | {methods[name].label} | {budget} | {median:.2f} [{low:.2f}, {high:.2f}] | "
                      f"{statistics.median(cell.iterations):.0f} | {statistics.median(cell.seconds):.2f} | "
                      f"{statistics.median(cell.cpu):.2f} |", flush=True)
    if breaching_skip is not None:
        print(f"\nbreaching rows skipped: {breaching_skip}")
    figure = Path(args.figure)
    draw(results, methods, figure)
    raw = [{"model": model, "batch": batch, "method": name, "kind": kind, "value": value, **dataclasses.asdict(cell)}
           for (model, batch), cells in results.items() for (kind, value, name), cell in cells.items()]
    figure.with_suffix(".json").write_text(json.dumps(raw, indent=1))
    print(f"\nfigure: {figure} (per-batch values: {figure.with_suffix('.json')})")


def plan_rows(methods: dict[str, Method], budgets: list[float], iterations: list[int], device: torch.device,
              prepare_breaching: Callable) -> list[tuple[Row, Callable]]:
    """Each row with its ``run(case) -> Outcome``; deepleak's attacks are built here, once per
    row, breaching's attacker once per batch and method (outside any clock)."""
    plan: list[tuple[Row, Callable]] = []
    for name, method in methods.items():
        if method.tool == "deepleak":
            attacks = [("budget", b, build_attack(method, budget_s=b)) for b in budgets]
            if method.steps_comparable:
                attacks += [("iterations", n, build_attack(method, iterations=n, restarts=1)) for n in iterations]
            plan += [((kind, value, name), lambda case, a=attack: run_deepleak(a, case[0], case[2], case[3]))
                     for kind, value, attack in attacks]
            continue
        prepared: dict[int, object] = {}

        def trial(case, overrides=method.overrides, prepared=prepared):
            if id(case[0]) not in prepared:
                prepared[id(case[0])] = prepare_breaching(case[0], case[2], device, overrides)
            return prepared[id(case[0])]

        if name == "breaching_planned":
            step_s: dict[int, float] = {}

            def planned(case, budget, t=trial, step_s=step_s):
                if id(case[0]) not in step_s:  # 20 steps after 3, outside any clock
                    step_s[id(case[0])] = breaching_step_seconds(t(case))
                return max(1, int(budget / step_s[id(case[0])]))

            plan += [(("budget", b, name), lambda case, b=b, t=trial, p=planned:
                      run_breaching(t(case), case[3], budget_s=b, iterations=p(case, b))) for b in budgets]
            continue
        plan += [(("budget", b, name), lambda case, b=b, t=trial: run_breaching(t(case), case[3], budget_s=b))
                 for b in budgets]
        if method.steps_comparable:
            plan += [(("iterations", n, name), lambda case, n=n, t=trial: run_breaching(t(case), case[3], iterations=n))
                     for n in iterations]
    return plan


def breaching_step_seconds(trial) -> float:
    """Wall seconds of one of breaching's steps on this trial: (23 steps - 3 steps) / 20."""
    with contextlib.redirect_stdout(io.StringIO()):
        started = time.perf_counter()
        trial.run(3)
        short = time.perf_counter() - started
        started = time.perf_counter()
        trial.run(23)
        return max((time.perf_counter() - started - short) / 20, 1e-6)


def warm_up(methods: dict[str, Method], case, device, prepare_breaching) -> None:
    """A 3-step run of every method on the first batch (at most 5 s: the replay's order search
    runs before its steps): first-call costs (kernels, breaching's scripted cosine, FD's and
    auto's code paths) are paid before any clock starts."""
    for method in methods.values():
        if method.tool == "deepleak":
            attack = build_attack(method, iterations=3, restarts=1, budget_s=5)
            run_deepleak(attack, case[0], case[2], case[3])
        else:
            trial = prepare_breaching(case[0], case[2], device, method.overrides)
            with contextlib.redirect_stdout(io.StringIO()):
                trial.run(3)


def draw(results, methods: dict[str, Method], path: Path) -> None:
    """One panel per (model, batch): median PSNR against median seconds, a line through each
    method's budget rows (95 % intervals as bars), hollow markers for its iteration rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    panels = list(results)
    columns = min(len(panels), 3) or 1
    lines = max(1, math.ceil(len(panels) / columns))
    fig, axes = plt.subplots(lines, columns, figsize=(5 * columns, 3.8 * lines), squeeze=False)
    colours = {name: f"C{i}" for i, name in enumerate(methods)}
    for ax, key in zip(axes.flat, panels):
        for name, method in methods.items():
            of_method = {(kind, value): cell for (kind, value, n), cell in results[key].items() if n == name}
            has_budgets = any(kind == "budget" for kind, _ in of_method)
            for kind, marker, fill in (("budget", "o", None), ("iterations", "s", "none")):
                points = sorted((statistics.median(c.seconds), *median_interval(c.psnr))
                                for (k, _), c in of_method.items() if k == kind)
                if not points:
                    continue
                x, y, lo, hi = zip(*points)
                ax.errorbar(x, y, yerr=[np.subtract(y, lo), np.subtract(hi, y)], color=colours[name], marker=marker,
                            mfc=fill, capsize=2, linestyle="-" if kind == "budget" else ":",
                            label=method.label if kind == "budget" or not has_budgets else None)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1, 2, 3, 5)))
        ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel("attack wall seconds (median)")
        ax.set_ylabel("PSNR dB (median, 95% interval)")
        ax.set_title(f"{key[0]}, batch {key[1]}")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    extra = {}
    if handles:
        legend = fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1, 0.95), fontsize=8,
                            title="dots, solid: wall-clock budgets\nhollow squares, dotted: N iterations",
                            title_fontsize=7)
        extra["bbox_extra_artists"] = [legend]
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", **extra)
    plt.close(fig)
