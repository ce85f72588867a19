"""Tests for deepleak.metrics: image metrics, pairing, label metrics, LPIPS loading (offline)."""

import json
import socket

import numpy as np
import pytest
import torch
import torchvision

from deepleak import metrics as M


def _images(k=4, side=16, seed=0):
    return torch.rand(k, 3, side, side, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def fake_torch_home(tmp_path, monkeypatch):
    """TORCH_HOME pointing at an empty temp dir; returns the checkpoint path inside it."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    return tmp_path / "hub" / "checkpoints" / M.ALEXNET_FILE


# --------------------------------------------------------------------------- PSNR / SSIM / MSE

def test_psnr_constant_offset_matches_formula():
    x = torch.full((2, 3, 8, 8), 0.5, dtype=torch.float64)
    y = x + 0.1  # mse 0.01 -> 10*log10(1/0.01) = 20 dB
    np.testing.assert_allclose(M.psnr(x, y), [20.0, 20.0], atol=1e-6)
    np.testing.assert_allclose(M.mse(x, y), [0.01, 0.01], atol=1e-9)


def test_psnr_gaussian_noise_level():
    x = torch.full((1, 3, 64, 64), 0.5, dtype=torch.float64)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.05
    expected = 10 * np.log10(1 / noise.pow(2).mean().item())
    assert M.psnr(x, x + noise)[0] == pytest.approx(expected)
    assert abs(M.psnr(x, x + noise)[0] - 26.02) < 0.2  # sigma 0.05 -> ~26 dB


def test_psnr_identical_is_capped():
    x = _images()
    out = M.psnr(x, x)
    assert np.all(out == M.PSNR_CAP_DB) and np.isfinite(out).all()


@pytest.mark.parametrize("side", [8, 16, 32])
def test_ssim_identical_is_one(side):
    x = _images(side=side)
    np.testing.assert_allclose(M.ssim(x, x), 1.0, atol=1e-12)
    assert np.all(M.ssim(x, _images(side=side, seed=1)) < 0.5)


def test_ssim_win_size():
    assert M.ssim_win_size(32, 32) == 7
    assert M.ssim_win_size(6, 8) == 5
    assert M.ssim_win_size(4, 4) == 3
    with pytest.raises(ValueError):
        M.ssim_win_size(2, 8)


# --------------------------------------------------------------------------- label metrics

def test_label_metrics_hand_computed():
    true, pred = [0, 0, 1, 2], [0, 1, 1, 2]
    # counts over C=5: true (2,1,1,0,0), pred (1,2,1,0,0)
    assert M.label_accuracy(pred, true, 5) == 0.75      # min-overlap 1+1+1 over 4
    assert M.count_accuracy(pred, true, 5) == 3 / 5      # classes 2,3,4 exact
    assert M.count_accuracy_present(pred, true, 5) == 1 / 3  # of {0,1,2} only 2 exact
    assert M.existence_accuracy(pred, true, 5) == 1.0    # same class set
    assert M.existence_jaccard(pred, true, 5) == 1.0
    assert M.exact_batch(pred, true, 5) == 0.0


def test_label_metrics_wrong_class_and_exact():
    true, pred = [3, 3, 7], [3, 5, 7]
    # C=10: true {3:2, 7:1}, pred {3:1, 5:1, 7:1}
    assert M.label_accuracy(pred, true, 10) == pytest.approx(2 / 3)
    assert M.count_accuracy(pred, true, 10) == pytest.approx(8 / 10)   # 3 and 5 wrong
    assert M.existence_accuracy(pred, true, 10) == pytest.approx(9 / 10)  # 5 wrongly present
    assert M.existence_jaccard(pred, true, 10) == pytest.approx(2 / 3)
    d = M.label_metrics(torch.tensor([7, 3, 3]), np.array(true), 10)
    assert d["exact_batch"] == 1.0 and d["label_accuracy"] == 1.0 and d["count_accuracy"] == 1.0
    json.dumps(d)
    with pytest.raises(ValueError):
        M.label_accuracy([10], [0], 10)


# --------------------------------------------------------------------------- pairing

def test_pair_hungarian_recovers_shuffle():
    orig = _images(k=6)
    shuffle = [3, 0, 5, 1, 4, 2]
    rec = (orig[shuffle] + 0.02 * torch.randn(orig.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    perm, rule = M.pair(rec, orig)  # no labels -> hungarian
    assert rule == "hungarian_psnr"
    assert torch.equal(torch.tensor(shuffle)[perm], torch.arange(6))
    # Repeated true labels also force Hungarian.
    perm2, rule2 = M.pair(rec, orig, [0, 0, 1, 2, 3, 4], [0, 0, 1, 2, 3, 4])
    assert rule2 == "hungarian_psnr" and perm2 == perm


def test_pair_by_label_when_unique():
    orig = _images(k=4)
    true = [7, 2, 9, 4]
    rec_labels = [9, 7, 4, 2]
    rec = orig[[1, 3, 2, 0]].flip(0)  # images deliberately do NOT match labels' order
    perm, rule = M.pair(rec, orig, rec_labels, true)
    assert rule == "label"
    assert [rec_labels[j] for j in perm] == true
    # Restored labels differ from the true set -> Hungarian.
    _, rule = M.pair(rec, orig, [9, 7, 4, 1], true)
    assert rule == "hungarian_psnr"


def test_image_metrics_pairs_and_serialises():
    orig = _images(k=4, side=16)
    rec = orig[[2, 0, 3, 1]]
    out = M.image_metrics(rec, orig)
    assert out["pairing"] == "hungarian_psnr" and out["permutation"] == [1, 3, 0, 2]
    assert out["psnr"] == [M.PSNR_CAP_DB] * 4 and out["ssim_mean"] == pytest.approx(1.0)
    assert out["mse_mean"] == 0.0 and out["nonfinite"] is False
    assert out["lpips"] is None and "no lpips_metric" in out["lpips_absent_reason"]
    json.loads(json.dumps(out, allow_nan=False))


def test_image_metrics_nonfinite_flagged():
    orig = _images(k=3, side=8)
    rec = orig.clone()
    rec[1, 0, 0, 0] = float("nan")
    rec[2] = float("inf")
    out = M.image_metrics(rec, orig)
    assert out["nonfinite"] is True and out["num_nonfinite"] == 2
    assert out["nonfinite_per_image"] == [False, True, True]
    assert out["psnr"][1:] == [None, None] and out["psnr_mean"] == M.PSNR_CAP_DB
    json.dumps(out, allow_nan=False)  # no NaN anywhere
    all_bad = M.image_metrics(torch.full_like(orig, float("nan")), orig)
    assert all_bad["psnr_mean"] is None and all_bad["num_nonfinite"] == 3
    json.dumps(all_bad, allow_nan=False)


# --------------------------------------------------------------------------- LPIPS

def test_lpips_absent_without_checkpoint(fake_torch_home, no_network):
    metric = M.load_lpips()
    assert not metric.available
    assert str(fake_torch_home) in metric.absent_reason
    assert M.ALEXNET_FILE in metric.absent_reason and metric.absent_reason.startswith("LPIPS absent")
    with pytest.raises(RuntimeError):
        metric(_images(), _images())
    out = M.image_metrics(_images(k=2), _images(k=2, seed=1), lpips_metric=metric)
    assert out["lpips"] is None and out["lpips_absent_reason"] == metric.absent_reason


def _write_fake_alexnet(path):
    torch.manual_seed(0)
    state = torchvision.models.alexnet(weights=None).state_dict()
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return state


def test_lpips_loads_trunk_from_cached_file(fake_torch_home, no_network, capsys):
    state = _write_fake_alexnet(fake_torch_home)
    metric = M.LPIPSMetric(check_hash=False)  # a fake file cannot have the real sha256
    assert metric.available, metric.absent_reason
    assert capsys.readouterr().out == ""  # lpips' "Setting up ..." prints are swallowed
    # The trunk holds exactly the weights from the file (conv1 and conv5).
    assert torch.equal(metric.model.net.slice1[0].weight, state["features.0.weight"])
    assert torch.equal(metric.model.net.slice5[0].bias, state["features.10.bias"])
    # The linear heads are lpips' shipped v0.1 weights.
    lin = torch.load(M.lpips._lpips_linear_weights_path(), map_location="cpu", weights_only=True)
    assert torch.equal(metric.model.lin0.model[1].weight, lin["lin0.model.1.weight"])

    for side in (8, 32):  # 8 px goes through the upsampling path
        x, y = _images(k=2, side=side), _images(k=2, side=side, seed=1)
        np.testing.assert_allclose(metric(x, x), 0.0, atol=1e-7)
        assert np.all(metric(x, y) > 0)
    out = M.image_metrics(y, x, lpips_metric=metric)
    assert len(out["lpips"]) == 2 and out["lpips_mean"] > 0 and out["lpips_absent_reason"] is None
    json.dumps(out, allow_nan=False)


def test_lpips_rejects_fake_checkpoint_by_hash(fake_torch_home, no_network):
    _write_fake_alexnet(fake_torch_home)
    metric = M.LPIPSMetric()
    assert not metric.available and "sha256" in metric.absent_reason


def test_flat_guess_spreads_k_over_the_classes():
    assert M.flat_guess(4, 3).tolist() == [0, 0, 1, 2]
    assert M.flat_guess(3, 10).tolist() == [0, 1, 2]
    assert np.bincount(M.flat_guess(64, 10)).tolist() == [7, 7, 7, 7, 6, 6, 6, 6, 6, 6]
    with pytest.raises(ValueError, match="k >= 1"):
        M.flat_guess(0, 10)


def test_label_floor_is_the_flat_guess_scored_like_a_method():
    assert M.label_floor([0, 0, 1, 2], 3) == 1.0          # the batch is the flat guess
    assert M.label_floor([5, 5, 5, 5], 10) == 0.0         # guess 0..3, none is 5
    assert M.label_floor([0, 0, 0, 0], 10) == 0.25        # one of the guess's four is a 0
    assert M.label_floor([0] * 8 + [1] * 8, 4) == 0.5     # guess 4 of each class: 4 + 4 of 16


def test_label_floor_of_uniform_batches_matches_its_expectation():
    """The figures docs/labels.md quotes: about 0.85 at K = 64 over 10 classes, 0.57 at K = 8."""
    rng = np.random.default_rng(0)
    for k, n, expected in ((64, 10, 0.849), (8, 10, 0.570), (64, 100, 0.474)):
        floors = [M.label_floor(rng.integers(0, n, k), n) for _ in range(4000)]
        assert np.mean(floors) == pytest.approx(expected, abs=0.01), (k, n)
