"""The noise floor (uniform noise and the data set's mean image against the private batch) and
the batched SSIM it shares with the reconstruction's scores."""

import json
import time

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from deepleak import metrics as M
from deepleak.metrics import images as image_module


class Constant:
    """A data set of ``n`` images; image i is the constant ``values[i]`` everywhere."""

    def __init__(self, values, shape=(3, 8, 8)):
        self.values = np.asarray(values, dtype=np.float64)
        self.shape = shape
        self.asked: list[list[int]] = []

    def __len__(self):
        return len(self.values)

    def batch(self, indices):
        self.asked.append([int(i) for i in indices])
        images = torch.tensor(self.values[np.asarray(indices)], dtype=torch.float32)[:, None, None, None]
        return images.expand(-1, *self.shape).clone(), torch.zeros(len(indices), dtype=torch.int64)


def test_uniform_noise_against_grey_is_10_79_db():
    grey = torch.full((2, 3, 64, 64), 0.5)
    floor = M.noise_floor(grey, seed=7, mean_image=None)
    # E[(U - 0.5)^2] = 1/12 -> 10 log10(12) = 10.792 dB; 24 576 pixels: within ~0.02 dB
    assert floor["uniform"]["psnr"] == pytest.approx(10 * np.log10(12), abs=0.05)
    # no shared structure: SSIM ~ C2 / (var + C2) = 0.03^2 / (1/12 + 0.03^2) = 0.0107
    assert floor["uniform"]["ssim"] == pytest.approx(0.0009 / (1 / 12 + 0.0009), abs=1e-3)
    assert M.noise_floor(grey, seed=7, mean_image=None)["uniform"] == floor["uniform"]  # fixed by the seed
    assert M.noise_floor(grey, seed=8, mean_image=None)["uniform"] != floor["uniform"]


def test_mean_image_of_a_constant_data_set_is_capped_and_exact():
    dataset = Constant([0.5] * 10)
    mean = M.dataset_mean_image(dataset)
    assert mean.count == 10 and mean.image.shape == (3, 8, 8) and np.all(mean.image == 0.5)
    floor = M.noise_floor(torch.full((3, 3, 8, 8), 0.5), seed=0, mean_image=mean)
    assert floor["mean_image"] == {"psnr": M.PSNR_CAP_DB, "ssim": 1.0}  # identical: the 100 dB cap, not inf
    assert floor["mean_image_over"] == 10 and floor["mean_image_absent_reason"] is None
    json.dumps(floor, allow_nan=False)  # metrics.json is written without NaN/inf


def test_mean_image_against_another_grey_has_the_known_psnr_and_ssim():
    mean = M.dataset_mean_image(Constant([0.0, 1.0]))  # mean 0.5
    floor = M.noise_floor(torch.full((1, 3, 8, 8), 0.25), seed=0, mean_image=mean)
    assert floor["mean_image"]["psnr"] == pytest.approx(10 * np.log10(1 / 0.0625))  # MSE 0.25^2 -> 12.04 dB
    # flat images: SSIM = (2 * 0.5 * 0.25 + C1) / (0.5^2 + 0.25^2 + C1), C1 = 0.01^2
    assert floor["mean_image"]["ssim"] == pytest.approx((0.25 + 1e-4) / (0.3125 + 1e-4))


def test_mean_image_is_over_a_fixed_sample_of_256():
    dataset = Constant(np.arange(1000) / 999)
    mean = M.dataset_mean_image(dataset)
    picked = sorted(i for chunk in dataset.asked for i in chunk)
    assert mean.count == 256 and len(set(picked)) == 256 and max(len(c) for c in dataset.asked) <= 32
    assert mean.image[0, 0, 0] == pytest.approx(np.mean(np.array(picked) / 999))
    again = Constant(np.arange(1000) / 999)
    M.dataset_mean_image(again)
    assert sorted(i for chunk in again.asked for i in chunk) == picked  # the same sample every run


def test_no_data_set_gives_no_mean_image():
    floor = M.noise_floor(torch.rand(2, 1, 8, 8), seed=3, mean_image=None, absent_reason="imported update")
    assert floor["mean_image"] is None and floor["mean_image_over"] is None
    assert floor["mean_image_absent_reason"] == "imported update"
    assert set(floor["uniform"]) == {"psnr", "ssim"}


def test_noise_floor_uses_the_reconstruction_metrics():
    originals = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    mean = M.MeanImage(np.full((3, 16, 16), 0.4), 5)
    floor = M.noise_floor(originals, seed=1, mean_image=mean)
    reference = np.broadcast_to(mean.image, originals.shape)
    assert floor["mean_image"]["psnr"] == pytest.approx(M.psnr(reference, originals).mean())
    assert floor["mean_image"]["ssim"] == pytest.approx(M.ssim(reference, originals).mean())


def test_noise_floor_summary_aggregates_like_the_other_metrics():
    records = [{"noise_floor": {"uniform": {"psnr": 7.0, "ssim": 0.01}, "mean_image": {"psnr": 12.0, "ssim": 0.2}}},
               {"noise_floor": {"uniform": {"psnr": 9.0, "ssim": 0.03}, "mean_image": None}},
               {"label_accuracy": 1.0}]  # a trial without it
    summary = M.noise_floor_summary(records)["noise_floor"]
    assert summary["uniform"]["psnr"] == {"mean": 8.0, "std": 1.0, "n": 2}  # population std, as the summary
    assert summary["mean_image"]["ssim"] == {"mean": 0.2, "std": 0.0, "n": 1}
    assert M.noise_floor_summary([{"label_accuracy": 1.0}]) == {}


def test_noise_floor_reports_its_own_seconds():
    originals = torch.rand(8, 3, 32, 32)
    mean = M.MeanImage(np.full((3, 32, 32), 0.5), 256)
    started = time.perf_counter()
    floor = M.noise_floor(originals, seed=1, mean_image=mean)
    assert 0 < floor["seconds"] <= time.perf_counter() - started  # its cost is timed, not bounded (that is a bench's job)


@pytest.mark.parametrize("shape", [(4, 3, 32, 32), (3, 1, 8, 8), (2, 3, 9, 12), (5, 3, 16, 16)])
def test_batched_ssim_equals_skimage(shape):
    rng = np.random.default_rng(0)
    x = rng.random(shape)
    y = np.clip(x + 0.2 * rng.standard_normal(shape), 0, 1)
    win = M.ssim_win_size(shape[2], shape[3])
    expected = [structural_similarity(a.transpose(1, 2, 0), b.transpose(1, 2, 0), data_range=1.0, channel_axis=-1,
                                      win_size=win) for a, b in zip(x, y)]
    np.testing.assert_allclose(M.ssim(x, y), expected, rtol=0, atol=1e-12)


def test_batched_ssim_in_chunks_is_the_same(monkeypatch):
    rng = np.random.default_rng(1)
    x, y = rng.random((7, 3, 16, 16)), rng.random((7, 3, 16, 16))
    whole = M.ssim(x, y)
    monkeypatch.setattr(image_module, "_SSIM_CHUNK", 2 * 3 * 16 * 16)  # two images per chunk
    np.testing.assert_array_equal(M.ssim(x, y), whole)
    assert M.ssim(x[:0], y[:0]).shape == (0,)
