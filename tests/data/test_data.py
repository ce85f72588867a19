"""Data sets: the embedded sample set, CIFAR-10 (on a tiny fake folder) and ImageFolder trees."""

import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from deepleak.data import CIFAR10, ImageNet, SampleDataset
from deepleak.errors import DeepleakError


def _check_interface(ds, n, num_classes, res):
    assert len(ds) == n
    assert ds.num_classes == num_classes
    assert ds.image_shape == (3, res, res)
    assert len(ds.class_names) == num_classes
    assert isinstance(ds.targets, np.ndarray) and ds.targets.dtype == np.int64 and ds.targets.shape == (n,)
    img, label = ds[0]
    assert img.dtype == torch.float32 and img.shape == (3, res, res)
    assert isinstance(label, int) and label == ds.targets[0]
    x, y = ds.batch([n - 1, 0, 0])
    assert x.shape == (3, 3, res, res) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and y.tolist() == [ds.targets[n - 1], ds.targets[0], ds.targets[0]]
    assert torch.equal(x[1], img)
    assert 0.0 <= x.min() and x.max() <= 1.0


# ---------------------------------------------------------------- sample set


def _distinct(images: torch.Tensor) -> int:
    return len({im.numpy().tobytes() for im in images})


def test_sample_default_shapes_and_range():
    ds = SampleDataset()
    _check_interface(ds, 640, 10, 32)
    assert np.array_equal(np.bincount(ds.targets), np.full(10, 64))
    x, _ = ds.batch(range(len(ds)))
    assert x.min() >= 0 and x.max() <= 1 and x.std() > 0.1
    # Classes 0..7 come from 8 different photos.
    assert len({name.split("_r")[0] for name in ds.class_names[:8]}) == 8


def test_sample_deterministic_and_seeded():
    a, b, c = SampleDataset(seed=3), SampleDataset(seed=3), SampleDataset(seed=4)
    xa, _ = a.batch(range(len(a)))
    assert torch.equal(xa, b.batch(range(len(b)))[0])
    assert not torch.equal(xa, c.batch(range(len(c)))[0])


def test_sample_class_stable_across_num_classes():
    small, large = SampleDataset(num_classes=3, crops_per_class=4), SampleDataset(num_classes=20, crops_per_class=8)
    assert torch.equal(small.batch(range(4))[0], large.batch(range(4))[0])
    assert small.class_names == large.class_names[:3]


def test_sample_100_classes_all_crops_distinct():
    ds = SampleDataset(num_classes=100)
    assert len(ds) == 6400 and len(set(ds.class_names)) == 100
    x, y = ds.batch(range(len(ds)))
    assert _distinct(x) == 6400
    assert np.array_equal(y.numpy(), ds.targets)


@pytest.mark.parametrize("res", [8, 16, 64])
def test_sample_resolutions(res):
    ds = SampleDataset(num_classes=10, resolution=res, crops_per_class=16)
    _check_interface(ds, 160, 10, res)
    x, _ = ds.batch(range(len(ds)))
    assert _distinct(x) == len(ds)


def test_sample_large_resolution_renders_lazily():
    ds = SampleDataset(num_classes=100, resolution=128, crops_per_class=64)  # too big to keep in memory
    x, y = ds.batch([0, 6399])
    assert x.shape == (2, 3, 128, 128) and y.tolist() == [0, 99]
    assert 0 <= x.min() and x.max() <= 1


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"num_classes": 101}, "at most 100 classes"),
        ({"num_classes": 0}, "num_classes=0"),
        ({"resolution": 4}, "resolution"),
        ({"resolution": 1024}, "resolution"),
        ({"crops_per_class": 0}, "crops_per_class"),
    ],
)
def test_sample_bad_settings(kwargs, words):
    with pytest.raises(DeepleakError, match=words) as err:
        SampleDataset(**kwargs)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- CIFAR-10


def _fake_cifar(root, per_batch=4, test=6):
    """A tiny cifar-10-batches-py folder in torchvision's format (pickled dicts, uint8 rows)."""
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder)
    rng = np.random.default_rng(0)

    def write(name, n, offset):
        labels = [(offset + i) % 10 for i in range(n)]
        data = rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump({"batch_label": name, "labels": labels, "data": data, "filenames": [f"{i}.png" for i in range(n)]}, f)
        return data, labels

    train = [write(f"data_batch_{b}", per_batch, b) for b in range(1, 6)]
    test_data = write("test_batch", test, 0)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(os.path.join(folder, "batches.meta"), "wb") as f:
        pickle.dump({"num_cases_per_batch": per_batch, "label_names": names, "num_vis": 3072}, f)
    return train, test_data


def test_cifar10_fake_folder(tmp_path):
    train, (test_data, test_labels) = _fake_cifar(tmp_path)
    ds = CIFAR10(str(tmp_path), train=True)
    _check_interface(ds, 20, 10, 32)
    assert ds.class_names[0] == "airplane"
    assert ds.targets.tolist() == [lab for _, labels in train for lab in labels]
    # Pixel layout: rows are R plane, G plane, B plane of 32 x 32.
    expected = torch.from_numpy(train[0][0][1].reshape(3, 32, 32)).float() / 255
    assert torch.equal(ds[1][0], expected)

    test = CIFAR10(str(tmp_path), train=False, resolution=64)
    _check_interface(test, 6, 10, 64)
    assert test.targets.tolist() == test_labels


def test_cifar10_missing_root(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DeepleakError, match="CIFAR-10 not found under") as err:
        CIFAR10(str(missing))
    msg = str(err.value)
    assert str(missing) in msg and "cifar-10-batches-py" in msg and "dataset.root" in msg and "\n" not in msg


def test_cifar10_incomplete_or_corrupt(tmp_path):
    _fake_cifar(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    (folder / "data_batch_3").unlink()
    with pytest.raises(DeepleakError, match="data_batch_3"):
        CIFAR10(str(tmp_path))
    CIFAR10(str(tmp_path), train=False)  # the test split does not need the train files
    (folder / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DeepleakError, match="could not be read"):
        CIFAR10(str(tmp_path), train=False)


# ---------------------------------------------------------------- ImageFolder


def _write_tree(base, classes=("b_cat", "a_dog", "c_fish"), per_class=3):
    rng = np.random.default_rng(1)
    for c, name in enumerate(classes):
        os.makedirs(os.path.join(base, name))
        for i in range(per_class):
            size = (40 + 7 * i, 30 + 5 * c)  # (w, h): non-square, different sizes
            arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
            ext = "JPEG" if i % 2 == 0 else "png"
            Image.fromarray(arr).save(os.path.join(base, name, f"img{i}.{ext}"))
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(os.path.join(base, "a_dog", "gray.png"))  # grayscale


@pytest.mark.parametrize("res", [16, 48])
def test_imagenet_split_tree(tmp_path, res):
    _write_tree(tmp_path / "val")
    ds = ImageNet(str(tmp_path), resolution=res, split="val")
    _check_interface(ds, 10, 3, res)
    assert ds.class_names == ["a_dog", "b_cat", "c_fish"]  # sorted
    assert np.bincount(ds.targets).tolist() == [4, 3, 3]
    x, _ = ds.batch(range(len(ds)))
    assert x.shape == (10, 3, res, res)


def test_imagenet_flat_tree_and_max_classes(tmp_path):
    _write_tree(tmp_path)
    ds = ImageNet(str(tmp_path), resolution=32, max_classes=2)
    _check_interface(ds, 7, 2, 32)
    assert ds.class_names == ["a_dog", "b_cat"]


def test_imagenet_errors(tmp_path):
    with pytest.raises(DeepleakError, match="ImageNet not found under") as err:
        ImageNet(str(tmp_path / "nowhere"))
    assert str(tmp_path / "nowhere") in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DeepleakError, match="no class folders"):
        ImageNet(str(tmp_path))  # exists but empty
    os.makedirs(tmp_path / "empty_class")
    with pytest.raises(DeepleakError, match="no images"):
        ImageNet(str(tmp_path))
    _write_tree(tmp_path / "split" / "train")
    with pytest.raises(DeepleakError, match="found train"):
        ImageNet(str(tmp_path / "split"), split="val")
    with pytest.raises(DeepleakError, match="resolution"):
        ImageNet(str(tmp_path / "split"), resolution=8, split="train")
