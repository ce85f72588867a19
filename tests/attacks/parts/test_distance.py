"""The fused distances: same value and gradient as the plain per-layer formulas."""

import pytest
import torch

from deepleak.attacks.parts import distance as distances_module
from deepleak.attacks.parts.distance import L2, Cosine

SHAPES = [(4, 3, 5, 5), (4,), (10, 64), (10,)]


@pytest.fixture(autouse=True, params=["flat", "per-layer", "flat, tensor scalars", "per-layer, tensor scalars"])
def layout(request, monkeypatch):
    """Every test runs on every path: all layers as one vector (small models) or per layer,
    with scalars as Python numbers (CPU) or as 0-dim tensors (what a GPU runs)."""
    if "per-layer" in request.param:
        monkeypatch.setattr(distances_module, "FLAT_MAX", 0)
    if "tensor scalars" in request.param:
        monkeypatch.setattr(distances_module, "_python_scalars", lambda tensor: False)
    return request.param


def tensors(seed: int, requires_grad: bool = False) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=generator, dtype=torch.float64).requires_grad_(requires_grad) for s in SHAPES]


@pytest.mark.parametrize("distance", [L2(), Cosine()], ids=["l2", "cosine"])
def test_fused_distance_matches_the_plain_formula_in_value_and_gradient(distance):
    candidate, target = tensors(0, requires_grad=True), tensors(1)
    fused = distance(candidate, target)
    plain = distance.functional(candidate, target)
    assert fused.item() == pytest.approx(plain.item(), rel=1e-12)
    for a, b in zip(torch.autograd.grad(fused, candidate), torch.autograd.grad(plain, candidate)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)


def test_known_values():
    target = tensors(1)
    assert L2()(target, target).item() == 0
    assert Cosine()(target, target).item() == pytest.approx(0, abs=1e-12)
    assert Cosine()([-t for t in target], target).item() == pytest.approx(2)
    assert L2()([2 * t for t in target], target).item() == pytest.approx(sum(float((t * t).sum()) for t in target))


def test_cosine_target_norm_follows_the_target():
    """The cached target norm is recomputed when the target changes (new tensors or in place)."""
    distance = Cosine()
    candidate, target = tensors(0), tensors(1)
    first = distance(candidate, target).item()
    for t in target:
        t.mul_(-1)  # in place: same tensors, new version
    assert distance(candidate, target).item() == pytest.approx(2 - first)
    other = tensors(2)
    assert distance(candidate, other).item() == pytest.approx(distance.functional(candidate, other).item())


def test_zero_candidate_has_a_finite_cosine_gradient():
    candidate = [torch.zeros(s, dtype=torch.float64, requires_grad=True) for s in SHAPES]
    value = Cosine()(candidate, tensors(1))
    assert value.item() == 1
    assert all(bool(torch.isfinite(g).all()) for g in torch.autograd.grad(value, candidate))


def test_double_backward_through_the_candidate_graph():
    """As in the attack: the candidate is a gradient of a loss of x; d distance / dx matches
    the plain formula's."""
    weight = torch.randn(5, 7, dtype=torch.float64)
    target = [torch.randn(5, 7, dtype=torch.float64)]
    start = torch.rand(3, 7, dtype=torch.float64)
    results = []
    for use_fused in (True, False):
        x = start.clone().requires_grad_(True)
        w = weight.clone().requires_grad_(True)
        loss = torch.sigmoid(x @ w.T).square().sum()
        candidate = list(torch.autograd.grad(loss, [w], create_graph=True))
        distance = Cosine()
        value = distance(candidate, target) if use_fused else distance.functional(candidate, target)
        results.append(torch.autograd.grad(value, [x])[0])
    torch.testing.assert_close(results[0], results[1], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("distance", [L2(), Cosine()], ids=["l2", "cosine"])
def test_direction_is_the_value_and_gradient_without_a_graph(distance):
    """What the finite-difference route uses: D, dD/dc as coefficient x tensors, ||dD/dc||."""
    candidate, target = tensors(0, requires_grad=True), tensors(1)
    plain = distance.functional(candidate, target)
    gradient = torch.autograd.grad(plain, candidate)
    value, parts, norm = distance.direction([c.detach() for c in candidate], target)
    assert value == pytest.approx(plain.item(), rel=1e-12)
    rebuilt = [sum(coefficient * tensors_[i] for coefficient, tensors_ in parts) for i in range(len(SHAPES))]
    for a, b in zip(rebuilt, gradient):
        torch.testing.assert_close(a.detach(), b, rtol=1e-10, atol=1e-14)
    assert norm == pytest.approx(float(torch.sqrt(sum((g * g).sum() for g in gradient))), rel=1e-9)


def test_cosine_direction_near_parallel_is_formed_as_a_vector_or_declined(layout):
    """Near convergence the scalar norm would cancel: the direction is then formed as one
    vector (as the distance's backward forms it), or, for layers too large to flatten,
    declined (the caller differentiates the distance)."""
    target = tensors(1)
    almost = [(t * 2 + 1e-9 * torch.randn_like(t)).requires_grad_(True) for t in target]  # parallel to the target
    if "per-layer" in layout:
        assert Cosine().direction([a.detach() for a in almost], target) is None
        return
    value, parts, norm = Cosine().direction([a.detach() for a in almost], target)
    assert len(parts) == 1 and parts[0][0] == 1.0  # the vector form, not the scalar one
    expected = torch.autograd.grad(Cosine()(almost, target), almost)
    for got, want in zip(parts[0][1], expected):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-14)
    assert norm == pytest.approx(float(torch.sqrt(sum((g * g).sum() for g in expected))), rel=1e-9)
    assert norm > 0
    assert len(Cosine().direction(tensors(0), target)[1]) == 2  # far from parallel: the scalar form


@pytest.mark.parametrize("distance", [L2(), Cosine()], ids=["l2", "cosine"])
def test_restart_direction_is_each_restarts_value_and_gradient(distance):
    """Batched restarts: D and dD/dc of R candidates stacked on a leading axis at once, as
    vmap of autograd on the plain formula gives them, a zero candidate included."""
    from torch.func import grad_and_value, vmap

    target = tensors(1)
    stacked = [torch.stack([c for c in candidate]) for candidate in zip(tensors(0), tensors(2), tensors(3))]
    stacked = [torch.cat([s, torch.zeros_like(s[:1])]) for s in stacked]  # restart 3: the zero candidate
    value, direction = distance.restart_direction(stacked, target)
    assert value.shape == (4,) and [d.shape for d in direction] == [s.shape for s in stacked]
    plain_direction, plain_value = vmap(grad_and_value(distance.functional), in_dims=(0, None))(
        [s[:3] for s in stacked], target)
    torch.testing.assert_close(value[:3], plain_value, rtol=1e-12, atol=0)
    for got, want in zip(direction, plain_direction):
        torch.testing.assert_close(got[:3], want, rtol=1e-10, atol=1e-14)
    # The zero candidate: the one-restart closed form's value and gradient (cosine: -t / eps).
    one_value, parts, _ = distance.direction([s[3] for s in stacked], target)
    assert float(value[3]) == pytest.approx(one_value, rel=1e-12)
    for i, got in enumerate(direction):
        want = sum(coefficient * tensors_[i] for coefficient, tensors_ in parts)
        torch.testing.assert_close(got[3], want, rtol=1e-12, atol=0)
        assert bool(torch.isfinite(got[3]).all())
