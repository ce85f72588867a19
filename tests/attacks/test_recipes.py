"""Attack recipes composed from parts; priors, group consistency, DLG's soft labels, the
evaluation cap and the wall-clock budget, on tiny real cases."""

import copy
import functools
import json
import logging
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from deepleak.attacks import DLG, GradientMatching, GroupConsistency
from deepleak.attacks.parts.distance import L2
from deepleak.attacks.parts.prior import BatchNormStatistics, L2Norm, TotalVariation
from deepleak.attacks.parts.scheduler import cosine
from deepleak.config import config_dir, make
from deepleak.data import SampleDataset
from deepleak.errors import DeepleakError
from deepleak.metrics import psnr
from deepleak.models import LeNet, ResNet18
from deepleak.scenarios import FedSGD, PrivateBatch

from crafted import noise_floor_psnr

RECIPES = ["geng", "geng_plus", "cosine_lbfgs", "dlg", "ig", "gradinversion", "fedavg_replay", "fedavg_snapshots"]
PART = {folder: {p.stem: OmegaConf.load(p) for p in (Path(config_dir()) / "attack" / folder).glob("*.yaml")}
        for folder in ("optimizer", "distance", "prior", "scheduler", "group")}


def observe(k: int, model=None, classes: int = 10, resolution: int = 32):
    data = SampleDataset(num_classes=classes, resolution=resolution, crops_per_class=4)
    images, labels = data.batch([c * 4 for c in range(k)])  # distinct classes
    if model is None:
        torch.manual_seed(0)
        model = LeNet(classes, width=12)
    return FedSGD().observe(model, PrivateBatch(images, labels), classes), images, labels


def tiny_resnet(seed: int = 0) -> ResNet18:
    torch.manual_seed(seed)
    return ResNet18(10, image_shape=(3, 16, 16), width=4, activation_fn="sigmoid")


LBFGS = functools.partial(torch.optim.LBFGS, lr=1.0, max_iter=20, history_size=100, line_search_fn="strong_wolfe")
ADAM = functools.partial(torch.optim.Adam, lr=0.1)


# --------------------------------------------------------------------------- configs

@pytest.mark.parametrize("recipe", RECIPES)
def test_recipes_take_their_parts_from_the_part_files(compose, recipe):
    cfg = compose(f"attack={recipe}")
    text = (Path(config_dir()) / "attack" / f"{recipe}.yaml").read_text()
    assert "torch.optim" not in text and "deepleak.attacks.parts.distance" not in text  # no copies
    kind = "adam" if cfg.attack.optimizer._target_ == "torch.optim.Adam" else "lbfgs"
    own = OmegaConf.load(Path(config_dir()) / "attack" / f"{recipe}.yaml").get("optimizer", {})  # values it sets
    assert cfg.attack.optimizer == OmegaConf.merge(PART["optimizer"][kind], own)
    assert cfg.attack.distance._target_ == PART["distance"]["cosine" if recipe in ("ig", "cosine_lbfgs") else "l2"]._target_


def test_cosine_lbfgs_is_geng_plus_with_the_cosine_and_its_own_tv(compose):
    """deepleak's recipe for trained victims: geng_plus's optimiser and steps, Inverting
    Gradients' scale-free distance, TV 1e-2 (tuned on the seed-0 trained victim)."""
    plus, cosine = compose("attack=geng_plus").attack, compose("attack=cosine_lbfgs").attack
    assert cosine.distance._target_ == PART["distance"]["cosine"]._target_ and cosine.priors.tv.weight == 1e-2
    assert cosine.optimizer == plus.optimizer and (cosine.iterations, cosine.restarts, cosine.box) == (100, 1, False)
    rest = {k: v for k, v in OmegaConf.to_container(cosine).items() if k not in ("distance", "priors")}
    assert rest == {k: v for k, v in OmegaConf.to_container(plus).items() if k not in ("distance", "priors")}


def test_geng_geng_plus_and_ig_values(compose):
    """geng: the authors' code (L-BFGS lr 0.1, no line search, TV 200, 600 steps); geng_plus, the default: lr 1 with
    a strong-Wolfe line search for 100 steps; ig: the paper's recipe."""
    geng, plus, ig = compose("attack=geng").attack, compose("attack=geng_plus").attack, compose("attack=ig").attack
    lbfgs = {"_target_": "torch.optim.LBFGS", "_partial_": True, "max_iter": 20, "history_size": 100}
    assert OmegaConf.to_container(geng.optimizer) == {**lbfgs, "lr": 0.1, "line_search_fn": None}
    assert OmegaConf.to_container(plus.optimizer) == {**lbfgs, "lr": 1.0, "line_search_fn": "strong_wolfe"}
    assert plus.priors.tv.weight == 1e-6 and geng.priors.tv.weight == 200.0  # main.py's --tv-alpha default
    assert plus.box is False and geng.box is False
    assert plus.iterations == 100 and geng.iterations == 600  # main.py's --Iteration default
    assert compose().attack == plus  # the default
    assert OmegaConf.to_container(ig.optimizer) == {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.1}
    assert ig.priors.tv.weight == 0.2 and ig.scheduler.gamma == 0.1  # TV: breaching's invertinggradients
    assert (ig.iterations, ig.restarts, ig.signed, ig.box) == (2000, 2, True, True)


def test_gradinversion_has_every_prior_and_the_group(compose):
    cfg = compose("attack=gradinversion")
    attack = make(cfg.attack)
    assert set(attack.priors) == {"tv", "l2", "bn"}
    assert all(prior.weight > 0 for prior in attack.priors.values())
    assert isinstance(attack.group, GroupConsistency) and attack.group.size > 1
    assert isinstance(make(compose("attack=dlg").attack), DLG)


def test_part_values_and_parts_can_be_overridden(compose):
    cfg = compose("attack=ig", "attack.optimizer.lr=0.5", "attack.priors.tv.weight=3")
    assert cfg.attack.optimizer.lr == 0.5 and cfg.attack.priors.tv.weight == 3
    swapped = compose("attack=geng", "attack/optimizer=adam")
    assert swapped.attack.optimizer._target_ == "torch.optim.Adam"
    grouped = compose("attack=gradinversion", "attack.group.size=2")
    assert make(grouped.attack).group.size == 2
    added = compose("attack=geng", "+attack/group=consistency", "+attack/prior@attack.priors.bn=bn")
    attack = make(added.attack)
    assert attack.group.size == PART["group"]["consistency"].size and set(attack.priors) == {"tv", "bn"}


def test_cfg_job_after_an_override(deepleak):
    """`deepleak attack attack=gradinversion --cfg job`: an override before a flag."""
    result = deepleak("attack", "attack=gradinversion", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    cfg = OmegaConf.create(result.stdout)
    assert cfg.attack.group.size == 3 and cfg.attack.priors.bn._target_.endswith("BatchNormStatistics")


def test_bad_group_size_ends_in_one_line(deepleak):
    result = deepleak("attack", "attack=gradinversion", "attack.group.size=0")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip() and "WARNING" not in line]
    assert lines == ["deepleak: error: attack.group.size must be >= 1, got 0"]


@pytest.mark.parametrize("overrides, expected", [
    (["attack=gradinversion", "attack.priors.bn.weight=-1"], "attack.priors.bn.weight must be >= 0, got -1"),
    (["attack=gradinversion", "attack.priors.l2.weight=-1"], "attack.priors.l2.weight must be >= 0, got -1"),
    (["attack=gradinversion", "attack.max_evaluations=2"], "attack.max_evaluations must be >= restarts x group size (3), got 2"),
    (["attack=ig", "attack.max_evaluations=1"], "attack.max_evaluations must be >= restarts x group size (2), got 1"),
])
def test_bad_recipe_settings_are_user_errors(compose, overrides, expected):
    with pytest.raises(DeepleakError) as error:
        make(compose(*overrides).attack)
    assert str(error.value) == expected


# --------------------------------------------------------------------------- priors

def prior_step(prior, images, forward=None):
    """(value, gradient, value after one SGD step) of ``prior`` alone."""
    images = images.clone().requires_grad_(True)
    if forward:
        forward(images)
    value = prior(images)
    (gradient,) = torch.autograd.grad(value, [images])
    with torch.no_grad():
        stepped = images - 0.1 * gradient / gradient.norm()  # one normalised gradient step
        if forward:
            forward(stepped)
        after = float(prior(stepped))
    return float(value.detach()), gradient, after


@pytest.mark.parametrize("prior", [TotalVariation(1.0), L2Norm(1.0), "bn", "group"])
def test_each_prior_alone_reaches_the_images_and_lowers_itself(prior):
    torch.manual_seed(1)
    images = torch.rand(2, 3, 16, 16)
    forward = None
    if prior == "bn":
        model = tiny_resnet().train()
        prior = BatchNormStatistics(1.0)
        assert prior.attach(model) is None
        forward = model
    elif prior == "group":
        group = GroupConsistency(size=3, weight=1.0)
        images = torch.rand(3, 2, 3, 16, 16)
        anchor = group.anchor(images)  # held fixed, as between two refreshes

        def prior(x):
            return group(x, anchor)
    value, gradient, after = prior_step(prior, images, forward)
    assert value > 0
    assert torch.isfinite(gradient).all() and gradient.abs().sum() > 0
    assert after < value


def test_bn_prior_reads_the_matching_forward_and_keeps_the_public_statistics():
    model = tiny_resnet().train()
    layers = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for layer in layers:
            layer.running_mean.fill_(0.3)
    prior = BatchNormStatistics(2.0)
    prior.attach(model)
    inputs = []
    hooks = [layer.register_forward_pre_hook(lambda _m, args: inputs.append(args[0].detach())) for layer in layers]
    x = torch.rand(2, 3, 16, 16)
    model(x)  # a train-mode forward moves the model's running statistics ...
    for hook in hooks:
        hook.remove()
    assert not torch.allclose(layers[0].running_mean, torch.full_like(layers[0].running_mean, 0.3))
    # ... the prior compares with the public ones, as they were when it was attached.
    expected = 2.0 * sum(
        float((z.mean((0, 2, 3)) - 0.3).norm() + (z.var((0, 2, 3), unbiased=False) - 1).norm()) for z in inputs
    )
    assert len(inputs) == len(layers) == 20
    assert float(prior(x).detach()) == pytest.approx(expected, rel=1e-5)
    prior.detach()
    assert not any(m._forward_pre_hooks for m in model.modules())
    fresh = BatchNormStatistics(1.0)
    fresh.attach(model)
    with pytest.raises(RuntimeError, match="matching forward"):
        fresh(x)  # attached, but no forward pass since
    fresh.detach()


def test_bn_prior_on_a_model_without_bn_warns_once_and_contributes_zero(caplog):
    observation, _, labels = observe(1)
    prior = BatchNormStatistics(1.0)
    attack = GradientMatching(L2(), LBFGS, priors={"bn": prior}, iterations=2, box=False)
    with caplog.at_level(logging.WARNING):
        first = attack.reconstruct(observation, labels)
        second = attack.reconstruct(observation, labels)
    assert sum("no batch-norm layers" in r.message for r in caplog.records) == 1
    assert "no batch-norm" in first.inactive_priors["bn"] and second.inactive_priors == first.inactive_priors
    plain = GradientMatching(L2(), LBFGS, iterations=2, box=False).reconstruct(observation, labels)
    assert torch.equal(first.images, plain.images)  # exactly 0: same trajectory
    assert float(prior(torch.rand(1, 3, 8, 8))) == 0.0 and first.prior_values == {"bn": 0.0}


def bn_statistics_distance(model, images) -> float:
    """The unweighted BN prior of ``images`` on a train-mode copy of ``model``."""
    model = copy.deepcopy(model).train()  # a train-mode forward moves the running statistics
    probe = BatchNormStatistics(1.0)
    probe.attach(model)
    with torch.no_grad():
        model(images)
        value = float(probe(images))
    probe.detach()
    return value


def calibrated_resnet() -> ResNet18:
    """A tiny BN model whose running statistics are those of public data (other crops of the
    sample classes), as a trained model's would be; untrained ones hold BN's init (0, 1),
    which no image in [0, 1] comes near."""
    model = tiny_resnet()
    data = SampleDataset(num_classes=10, resolution=16, crops_per_class=4)
    public, _ = data.batch([c * 4 + j for c in range(10) for j in (1, 2, 3)])  # not the client's crops
    layers = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # a plain average over the public batch
    with torch.no_grad():
        model.train()(public)
    for layer in layers:
        layer.momentum = 0.1
    return model


def test_bn_prior_changes_the_reconstruction_on_a_bn_model():
    observation, images, labels = observe(2, model=calibrated_resnet(), resolution=16)
    results = {}
    for weight in (0.0, 1.0):
        attack = GradientMatching(L2(), ADAM, priors={"bn": BatchNormStatistics(weight)}, iterations=60)
        results[weight] = attack.reconstruct(observation, labels, seed=3)
        assert results[weight].inactive_priors == {}
    assert (results[0.0].images - results[1.0].images).abs().max() > 0.05
    without, with_prior = (bn_statistics_distance(observation.model, results[w].images) for w in (0.0, 1.0))
    assert with_prior < 0.7 * without  # measured: 0.61 vs 1.10 (the true images: 0.61)
    assert results[1.0].prior_values["bn"] == pytest.approx(with_prior, rel=1e-4)
    gain = psnr(results[1.0].images, images).mean() - psnr(results[0.0].images, images).mean()
    assert gain > 0.5  # measured: 7.5 vs 6.5 dB after 60 Adam steps


@pytest.mark.parametrize("bn_mode", ["train", "eval"])
@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_bn_prior_acts_in_both_bn_modes_with_every_activation(bn_mode, activation):
    data = SampleDataset(num_classes=10, resolution=16, crops_per_class=4)
    images, labels = data.batch([0, 4])
    torch.manual_seed(0)
    model = ResNet18(10, image_shape=(3, 16, 16), width=4, activation_fn=activation)
    observation = FedSGD(bn_mode=bn_mode).observe(model, PrivateBatch(images, labels), 10)
    assert observation.recipe.bn_mode == bn_mode
    result = GradientMatching(L2(), ADAM, priors={"bn": BatchNormStatistics(1.0)}, iterations=3).reconstruct(
        observation, labels)
    assert result.inactive_priors == {} and result.iterations == 3
    assert 0 < result.prior_values["bn"] < math.inf and math.isfinite(result.gradient_distance)


# --------------------------------------------------------------------------- group consistency

def test_group_consistency_runs_members_and_keeps_the_best():
    observation, _, labels = observe(1)
    group = GroupConsistency(size=3, weight=1.0, every=2, choose="best")
    result = GradientMatching(L2(), ADAM, group=group, iterations=6).reconstruct(observation, labels)
    assert len(result.extras["member_distances"]) == 3
    assert result.gradient_distance == min(result.extras["member_distances"])
    assert result.evaluations == 6 * 3 + 3  # every member every step, then each member scored
    mean = GroupConsistency(size=3, weight=1.0, every=2, choose="mean")
    averaged = GradientMatching(L2(), ADAM, group=mean, iterations=6).reconstruct(observation, labels)
    assert averaged.evaluations == 6 * 3 + 3 + 1  # and the mean scored
    assert averaged.extras["member_distances"] == pytest.approx(result.extras["member_distances"])  # same seeds, same members
    assert averaged.gradient_distance not in averaged.extras["member_distances"]


def test_group_anchor_is_refreshed_every_k_steps_and_detached():
    group = GroupConsistency(size=2, every=3)
    assert [step for step in range(10) if group.refresh_due(step)] == [3, 6, 9]
    images = torch.rand(2, 1, 3, 4, 4, requires_grad=True)
    anchor = group.anchor(images)
    assert not anchor.requires_grad and torch.allclose(anchor, images.detach().mean(0))
    assert float(group(images, None)) == 0.0
    assert group.select([3.0, float("nan"), 1.0]) == 2


@pytest.mark.parametrize("kwargs, message", [
    ({"size": 0}, "group.size must be >= 1"), ({"every": 0}, "group.every"),
    ({"choose": "median"}, "group.choose must be one of best, mean"), ({"weight": -1.0}, "group.weight"),
])
def test_group_settings_are_checked(kwargs, message):
    with pytest.raises(DeepleakError, match=message):
        GroupConsistency(**kwargs)


# --------------------------------------------------------------------------- DLG

def test_dlg_optimises_soft_labels_and_ignores_the_restored_ones():
    observation, images, labels = observe(1)
    wrong = (labels + 5) % 10
    attack = DLG(L2(), LBFGS, iterations=40, box=False)
    assert attack.optimises_labels and not GradientMatching.optimises_labels
    result = attack.reconstruct(observation, wrong)
    assert result.labels_from_attack
    assert result.labels.tolist() == labels.tolist()  # its own argmax, not the wrong input
    # measured 31.6 dB; the floor is 10.6 dB (the sample set's mean image; noise 7.0 dB)
    assert noise_floor_psnr(images) + 10 <= 25
    assert psnr(result.images, images)[0] > 25
    assert result.gradient_distance < 1e-3


def test_task_records_the_attacks_own_and_the_restored_labels(compose, tmp_path):
    from deepleak.tasks.attack import run

    cfg = compose("attack=dlg", "batch_size=1", "attack.iterations=40", "labels=oracle", "wrong_labels=1",
                  "model.width=12", "save_images=false", "device=cpu")
    trial = run(cfg, tmp_path)["per_trial"][0]
    assert trial["labels_source"] == "attack"
    assert trial["restored_label_accuracy"] == 0.0  # wrong_labels=1 on a batch of one
    assert trial["attack_label_accuracy"] == trial["label_accuracy"] == 1.0
    assert trial["attack_labels"] == trial["true_labels"]
    assert trial["restored_label_metrics"]["label_accuracy"] == 0.0
    fixed = compose("attack=geng", "batch_size=1", "attack.iterations=1", "save_images=false", "device=cpu")
    record = run(fixed, tmp_path / "geng")["per_trial"][0]
    assert record["labels_source"] == "restored" and "attack_label_accuracy" not in record
    assert record["restored_label_accuracy"] == record["label_accuracy"]


# --------------------------------------------------------------------------- budgets

def test_evaluation_cap_is_exact_for_lbfgs_adam_and_restarts():
    observation, _, labels = observe(1)
    lbfgs = GradientMatching(L2(), LBFGS, iterations=1000, box=False, max_evaluations=50).reconstruct(observation, labels)
    assert lbfgs.stopped_by_evaluations and lbfgs.evaluations == 50 + 1  # + scoring the kept iterate
    adam = GradientMatching(L2(), ADAM, iterations=1000, restarts=2, max_evaluations=40).reconstruct(observation, labels)
    assert adam.iterations == 40 and adam.evaluations == 40 + 2 and len(adam.restart_distances) == 2
    group = GroupConsistency(size=3, choose="mean")
    grouped = GradientMatching(L2(), ADAM, iterations=1000, group=group, max_evaluations=31).reconstruct(observation, labels)
    assert grouped.iterations == 10 and grouped.evaluations == 30 + 3 + 1  # + each member and the mean scored


def test_a_step_cut_by_the_cap_ends_at_its_lowest_evaluated_point():
    observation, _, labels = observe(1)
    one = GradientMatching(L2(), LBFGS, iterations=1, box=False).reconstruct(observation, labels)
    first_step = one.evaluations - 1
    assert first_step > 3
    # The second step needs more than 3 evaluations: the cap cuts it inside L-BFGS, which keeps
    # the lowest of its 3 evaluations (the first is at step 1's iterate: never worse than it).
    cap = first_step + 3
    capped = GradientMatching(L2(), LBFGS, iterations=2, box=False, max_evaluations=cap).reconstruct(observation, labels)
    assert capped.iterations == 1 and capped.stopped_by_evaluations and capped.evaluations == cap + 1
    assert capped.gradient_distance < one.gradient_distance
    assert not torch.equal(capped.images, one.images)


def test_budget_run_stops_in_time_and_writes_the_best_reconstruction(deepleak, tmp_path):
    result = deepleak("attack", "attack.iterations=5", "attack.restarts=1000", "attack.budget_s=3")
    assert result.returncode == 0, result.stderr
    (run_dir,) = [p for p in (tmp_path / "outputs" / "runs").glob("*/*") if p.is_dir()]
    trial = json.loads((run_dir / "metrics.json").read_text())["per_trial"][0]
    assert trial["stopped_by_budget"] is True
    assert trial["attack_seconds"] <= 3 + 2
    distances = trial["restart_distances"]
    assert 1 <= len(distances) < 1000
    assert trial["gradient_distance"] == min(distances)
    assert trial["best_restart"] == distances.index(min(distances))
    # No PSNR bar: 3 s of 5-step restarts on the default batch of 4 reach 9.9 dB, below that
    # batch's floor (12.3 dB, the sample set's mean image); this test is about the budget.
    assert all(math.isfinite(value) for value in trial["psnr"])
    assert (run_dir / "images" / "trial_000" / "grid.png").is_file()


def test_cosine_schedule():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = cosine(optimizer, 10, warmup=0.2, final=0.1)
    rates = []
    for _ in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[:3] == pytest.approx([0.5, 1.0, 1.0])
    assert rates[2] > rates[5] > rates[9] >= 0.1
