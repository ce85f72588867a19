"""The finite-difference image gradient: agrees with the exact double backward, refuses
non-smooth victims, and reconstructs as well as the exact route."""

import copy
import dataclasses
import functools

import pytest
import torch
import torch.nn.functional as F

from deepleak.attacks import DLG, GradientMatching
from deepleak.attacks.parts.distance import L2, Cosine
from deepleak.attacks.parts.group import GroupConsistency
from deepleak.attacks.parts.prior import BatchNormStatistics, TotalVariation, attach_priors, detach_priors
from deepleak.attacks.engine.image_gradient import DoubleBackward, FiniteDifference
from deepleak.errors import DeepleakError
from deepleak.metrics import psnr
from deepleak.models import LeNet, ResNet18, ResNet18ImageNet
from deepleak.scenarios.recipe import set_bn_mode

from crafted import lbfgs, noise_floor_psnr, observe


def cosine(a, b):
    flat = lambda ts: torch.cat([t.reshape(-1) for t in ts]).double()  # noqa: E731
    return float(F.cosine_similarity(flat(a), flat(b), dim=0))


def exact_gradient(model, variables, loss, distance, target):
    leaves = [v.detach().clone().requires_grad_(True) for v in variables]
    theta = torch.autograd.grad(loss(model, leaves), list(model.parameters()), create_graph=True)
    return list(torch.autograd.grad(distance(list(theta), target), leaves))


def hard_loss(labels):
    return lambda forward, v: F.cross_entropy(forward(v[0]), labels)


def case(make, pixels, batch=2, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    model = set_bn_mode(make().to(dtype), "train")
    generator = torch.Generator().manual_seed(seed + 1)
    labels = torch.arange(batch) % 10
    truth = torch.rand(batch, 3, pixels, pixels, generator=generator, dtype=dtype)
    target = [g.detach() for g in torch.autograd.grad(F.cross_entropy(model(truth), labels), list(model.parameters()))]
    images = torch.rand(batch, 3, pixels, pixels, generator=generator, dtype=dtype)
    return model, labels, target, images


SMOOTH = [
    (lambda: LeNet(10, (3, 16, 16), width=8, activation_fn="sigmoid"), 16),
    (lambda: ResNet18(10, (3, 16, 16), width=4, activation_fn="sigmoid"), 16),  # BN in train mode, shortcuts
]


@pytest.mark.parametrize("scheme, step, bar", [("forward", 1e-8, 1e-5), ("central", 1e-5, 1e-4)])
@pytest.mark.parametrize("distance", [L2(), Cosine()], ids=["l2", "cosine"])
@pytest.mark.parametrize("make, pixels", SMOOTH, ids=["lenet", "resnet18"])
def test_matches_the_double_backward_in_float64(make, pixels, distance, scheme, step, bar):
    model, labels, target, images = case(make, pixels)
    loss = hard_loss(labels)
    exact = exact_gradient(model, [images], loss, distance, target)
    route = FiniteDifference(scheme, step=step)
    value, prior, approx = route.value_and_gradient(model, [images], loss, distance, target)
    error = float((approx[0] - exact[0]).norm() / exact[0].norm())
    assert error < bar, error
    assert float(exact[0].norm()) > 0 and prior == 0.0
    theta = torch.autograd.grad(loss(model, [images]), list(model.parameters()))
    assert value == pytest.approx(float(distance(list(theta), target)), rel=1e-12)


def test_float32_defaults_agree_to_five_nines():
    for make, pixels in SMOOTH:
        model, labels, target, images = case(make, pixels, dtype=torch.float32)
        for scheme in ("forward", "central"):
            assert FiniteDifference(scheme).check(model, [images], hard_loss(labels), Cosine(), target)[0] > 0.9999


def test_soft_label_variables_get_their_gradient_too():
    model, labels, target, images = case(*SMOOTH[0])
    logits = torch.randn(2, 10, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    loss = lambda forward, v: F.cross_entropy(forward(v[0]), torch.softmax(v[1], dim=-1))  # noqa: E731
    exact = exact_gradient(model, [images, logits], loss, L2(), target)
    approx = FiniteDifference("central", step=1e-5).value_and_gradient(model, [images, logits], loss, L2(), target)[2]
    for a, e in zip(approx, exact):
        assert float((a - e).norm() / e.norm()) < 1e-6


def test_kinks_that_cannot_be_frozen_are_refused_with_one_sentence():
    with pytest.raises(DeepleakError, match="smooth victim, and LeNet has SELU"):
        FiniteDifference().prepare_model(LeNet(10, width=8, activation_fn="selu"))
    with pytest.raises(DeepleakError, match="smooth victim, and LeNet has ReLU"):  # the FedAvg replay does not freeze
        FiniteDifference().prepare_model(LeNet(10, width=8, activation_fn="relu"), freeze=False)
    assert FiniteDifference().prepare_model(LeNet(10, width=8, activation_fn="gelu")) is not None
    assert FiniteDifference().prepare_model(LeNet(10, width=8, activation_fn="relu")) is not None
    pooled = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.MaxPool2d(2, return_indices=True))
    with pytest.raises(DeepleakError, match="MaxPool2d"):  # its indices are an output: not frozen
        FiniteDifference().prepare_model(pooled)


KINKED = [  # (model, pixels, a step at which unfrozen differences cross kinks)
    (lambda: LeNet(10, (3, 16, 16), width=8, activation_fn="relu"), 16, 1e-3),
    (lambda: ResNet18ImageNet(10, (3, 32, 32), width=4, activation_fn="relu"), 32, 1e-5),  # ReLU, max-pool, BN
]


@pytest.mark.parametrize("scheme, step, bar", [("forward", 1e-8, 1e-4), ("central", 1e-7, 1e-6)])
@pytest.mark.parametrize("make, pixels, coarse", KINKED, ids=["lenet-relu", "resnet18-imagenet"])
def test_frozen_kinks_match_the_double_backward_in_float64(make, pixels, coarse, scheme, step, bar):
    """Across ReLU and max-pool kinks the difference of input gradients jumps; with the kinks
    frozen at theta it converges to the exact double backward (which holds them fixed too)."""
    model, labels, target, images = case(make, pixels)
    loss = hard_loss(labels)
    exact = exact_gradient(model, [images], loss, Cosine(), target)

    def error(route, victim):
        approx = route.value_and_gradient(victim, [images], loss, Cosine(), target)[2]
        return float((approx[0] - exact[0]).norm() / exact[0].norm())

    route = FiniteDifference(scheme, step=step)
    frozen = route.prepare_model(copy.deepcopy(model))
    assert not any(type(m) in (torch.nn.ReLU, torch.nn.MaxPool2d) for m in frozen.modules())
    assert error(route, frozen) < bar
    # At a coarser step the unfrozen difference crosses kinks and is meaningless; frozen, it is
    # only less accurate (first order in the step).
    coarse_route = FiniteDifference("forward", step=coarse)
    assert error(coarse_route, coarse_route.prepare_model(copy.deepcopy(model))) < 0.1
    assert error(FiniteDifference("forward", step=coarse), model) > 1.0
    # Outside a pass the frozen modules are plain ReLU and max-pooling.
    assert torch.equal(frozen(images), model(images))


def test_the_moved_parameters_are_put_back_bit_for_bit():
    model, labels, target, images = case(*SMOOTH[0], dtype=torch.float32)
    before = [p.detach().clone() for p in model.parameters()]
    route = FiniteDifference()
    for _ in range(3):
        route.value_and_gradient(model, [images], hard_loss(labels), Cosine(), target)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert all(p.requires_grad for p in model.parameters())
    # A change made elsewhere is seen: the next evaluation works at the new parameters.
    with torch.no_grad():
        next(model.parameters()).mul_(0.5)
    changed = [p.detach().clone() for p in model.parameters()]
    value = route.value_and_gradient(model, [images], hard_loss(labels), Cosine(), target)[0]
    assert all(torch.equal(p, c) for p, c in zip(model.parameters(), changed))
    theta = torch.autograd.grad(hard_loss(labels)(model, [images]), list(model.parameters()))
    assert value == pytest.approx(float(Cosine()(list(theta), target)), rel=1e-5)


def test_the_start_up_check_refuses_below_min_agreement():
    model, labels, target, images = case(*SMOOTH[0], dtype=torch.float32)
    route = FiniteDifference(step=1e-2)  # far too coarse for this model: the check must say so
    value = route.agreement(model, [images], hard_loss(labels), Cosine(), target)
    assert value < 0.999
    with pytest.raises(DeepleakError, match=f"cosine {value:.4f} at best"):
        route.check(model, [images], hard_loss(labels), Cosine(), target)
    calibrated = FiniteDifference()  # the grid finds a step that agrees
    agreement, step = calibrated.check(model, [images], hard_loss(labels), Cosine(), target)
    assert agreement > 0.9999 and step < 1e-2 and calibrated.current_step == step


@pytest.mark.parametrize("scheme, step, bar", [("forward", 1e-9, 1e-5), ("central", 1e-6, 1e-5)])
def test_the_whole_step_matches_the_exact_one_with_priors_group_and_bn(scheme, step, bar):
    """GradientMatching's objective gradient (distance + TV + BN prior + group term, 2 members)
    by both routes, on a BN model in float64. (TV rides in the passes at theta + a u, the BN
    prior has a backward pass of its own.)"""
    model, labels, target, _ = case(*SMOOTH[1])
    members = torch.rand(2, 2, 3, 16, 16, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    anchor = members.detach().mean(0) + 0.05
    gradients = {}
    for route in (DoubleBackward(), FiniteDifference(scheme, step=step)):
        attack = GradientMatching(L2(), torch.optim.Adam, priors={"tv": TotalVariation(1e-2), "bn": BatchNormStatistics(1e-2)},
                                   group=GroupConsistency(size=2, weight=0.5), image_gradient=route)
        copy_ = copy.deepcopy(model)
        attach_priors(attack.priors, copy_)
        images = members.clone().requires_grad_(True)
        total, distances, grads = attack._evaluate(copy_, images, None, labels, target, anchor)
        detach_priors(attack.priors)
        gradients[route.name] = (float(total), distances, grads[0])
    (t_exact, d_exact, g_exact), (t_fd, d_fd, g_fd) = gradients["double_backward"], gradients["finite_difference"]
    assert t_fd == pytest.approx(t_exact, rel=1e-10)
    assert d_fd == pytest.approx(d_exact, rel=1e-10)
    assert float((g_fd - g_exact).norm() / g_exact.norm()) < bar


def test_reconstructs_as_well_as_the_exact_route():
    """LeNet (sigmoid), one real sample-set image, L-BFGS: both routes pass 30 dB, within 1 dB
    (measured 31.7 and 31.2 dB; the floor is 10.6 dB, the sample set's mean image)."""
    observation, images, labels = observe(1)
    scores = {}
    for route in (DoubleBackward(), FiniteDifference()):
        result = lbfgs(40, image_gradient=route).reconstruct(observation, labels)
        scores[route.name] = psnr(result.images, images)[0]
        if route.name == "finite_difference":
            assert result.extras["image_gradient_agreement"] > 0.999
        else:
            assert "image_gradient_agreement" not in result.extras
    assert noise_floor_psnr(images) + 10 <= 30
    assert scores["finite_difference"] > 30 and scores["double_backward"] > 30
    assert abs(scores["finite_difference"] - scores["double_backward"]) < 1.0, scores


def test_dlg_runs_with_finite_differences():
    """30 steps: measured 27.4 dB (20 steps: 23.2); the floor is 10.6 dB (the sample set's mean image)."""
    observation, images, labels = observe(1)
    optimizer = functools.partial(torch.optim.LBFGS, lr=1.0, max_iter=20, history_size=100, line_search_fn="strong_wolfe")
    result = DLG(L2(), optimizer, iterations=30, box=False, image_gradient=FiniteDifference()).reconstruct(observation, labels)
    assert result.labels.tolist() == labels.tolist()
    assert noise_floor_psnr(images) + 10 <= 22
    assert psnr(result.images, images)[0] > 22


def test_refusals_and_bad_settings():
    from deepleak.attacks.fedavg_snapshots import FedAvgSnapshots

    with pytest.raises(DeepleakError, match="overrides it"):
        FedAvgSnapshots(L2(), torch.optim.Adam, image_gradient=FiniteDifference())

    class OtherRoute:
        exact = False

    with pytest.raises(DeepleakError, match="not OtherRoute"):
        GradientMatching(L2(), torch.optim.Adam, restarts=2, batched_restarts=True, image_gradient=OtherRoute())
    with pytest.raises(DeepleakError, match="scheme"):
        FiniteDifference("backward")
    with pytest.raises(DeepleakError, match="step"):
        FiniteDifference(step=0)
    observation, _, labels = observe(1)
    torch.manual_seed(0)
    selu = dataclasses.replace(observation, model=LeNet(10, width=12, activation_fn="selu"))
    with pytest.raises(DeepleakError, match="smooth victim"):
        lbfgs(2, image_gradient=FiniteDifference()).reconstruct(selu, labels)


@pytest.mark.parametrize("extra", [[], ["model.activation_fn=relu"], ["attack=ig", "attack.batched_restarts=true", "attack.restarts=2"]],
                         ids=["sigmoid", "relu-frozen-kinks", "batched-restarts"])
def test_cli_option_runs_and_records_the_agreement(deepleak, tmp_path, extra):
    import json

    done = deepleak("attack", "attack/image_gradient=finite_difference", "attack.iterations=3", "trials=1", *extra)
    assert done.returncode == 0, done.stderr[-2000:]
    (metrics,) = list((tmp_path / "outputs").rglob("metrics.json"))
    record = json.loads(metrics.read_text())
    trial = record["per_trial"][0]
    assert trial["image_gradient_agreement"] > 0.999 and 0 < trial["image_gradient_step"] < 1e-2
