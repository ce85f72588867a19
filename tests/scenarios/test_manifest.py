"""The manifest of an imported update: every refusal is one line naming the key or file,
raised by the attack task's ``validate`` (the CLI's precheck) before any work."""

import os

import numpy as np
import pytest
import torch

from deepleak.errors import DeepleakError
from deepleak.scenarios.manifest import load_manifest
from deepleak.tasks.attack import validate
from imported_client import LENET_TARGET, edit_manifest, write_client


class Evil:
    """Pickles a call of os.system: what a hostile update file may hold."""

    def __reduce__(self):
        return (os.system, ("echo owned > /dev/null",))


def refusal(compose, path, *overrides) -> str:
    cfg = compose("+scenario=imported", f"scenario.path={path}", *overrides)
    with pytest.raises(DeepleakError) as caught:
        validate(cfg)
    message = str(caught.value)
    assert "\n" not in message, message
    assert "weights_only=False" not in message and "Traceback" not in message
    return message


def test_a_complete_manifest_is_read(tmp_path):
    root = write_client(tmp_path / "u", kind="weights", local_batch_size=1, local_epochs=2, lr=0.05,
                        normalization=([0.5] * 3, [0.25] * 3))
    manifest = load_manifest(root)
    assert manifest.kind == "weights" and manifest.num_examples == 2 and manifest.local_epochs == 2
    assert manifest.lr == 0.05 and manifest.image_shape == (3, 12, 12) and manifest.bn_mode == "train"
    assert manifest.normalization.std == (0.25, 0.25, 0.25)
    assert [p.name for p in manifest.truth.images] == ["000.png", "001.png"] and manifest.truth.labels == (0, 1)
    assert manifest.update_file == root / "client.pt" and manifest.global_file == root / "global.pt"


def test_validate_passes_a_good_update(compose, tmp_path):
    root = write_client(tmp_path / "u")
    validate(compose("+scenario=imported", f"scenario.path={root}"))
    validate(compose("scenario=imported", f"scenario.path={root}", "labels=oracle"))


def test_lr_written_as_1e_minus_3_is_a_number(tmp_path):
    root = write_client(tmp_path / "u", kind="weights")
    (root / "manifest.yaml").write_text((root / "manifest.yaml").read_text().replace("lr: 0.05", "lr: 5e-2"))
    assert load_manifest(root).lr == 0.05


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"kind": "gradients"}, "unknown kind 'gradients'"),
        ({"num_examples": None}, "missing required key 'num_examples'"),
        ({"model": None}, "missing required key 'model'"),
        ({"global": None}, "missing required key 'global'"),
        ({"gradient": None}, "missing required key 'gradient' (kind: gradient)"),
        ({"global": "nowhere.pt"}, "missing file"),
        ({"image_shape": [3, 12]}, "image_shape must be [C, H, W]"),
        ({"num_classes": "ten"}, "num_classes must be an integer"),
        ({"bn_mode": "training"}, "bn_mode must be train or eval"),
        ({"learning_rate": 0.1}, "unknown key 'learning_rate'"),
        ({"model": {"name": "lenett"}}, "model.name 'lenett' is not a deepleak model"),
        ({"model": {"name": "lenet", "widht": 6}}, "unknown setting 'model.widht'"),
        ({"model": {"_target_": "nosuchpackage.nets.Net"}}, "model._target_ nosuchpackage.nets.Net cannot be imported"),
        ({"model": {"_target_": "os.system", "command": "echo owned"}}, "os.system is not an nn.Module class"),
        ({"model": {**LENET_TARGET, "activation": {"_target_": "os.system"}}}, "model.activation._target_ is not allowed"),
        ({"model": {"_target_": "deepleak.models.LeNet", "num_classes": 10, "width": 8}}, "has shape"),
        ({"num_classes": 7}, "has shape"),
        ({"normalization": {"mean": [0.5, 0.5], "std": [0.25, 0.25]}}, "normalization.mean must hold 3 numbers"),
        ({"normalization": {"mean": [0.5] * 3, "std": [0.25, 0.0, 0.25]}}, "normalization.std must be > 0"),
        ({"truth": {"images": "truth/", "labels": [0]}}, "truth.labels holds 1 labels, num_examples is 2"),
        ({"truth": {"images": "truth/", "labels": [0, 10]}}, "truth.labels must lie in [0, num_classes = 10)"),
        ({"truth": {"images": "missing/", "labels": [0, 1]}}, "missing folder"),
    ],
)
def test_gradient_manifest_refusals(compose, tmp_path, change, expected):
    root = edit_manifest(write_client(tmp_path / "u"), **change)
    assert expected in refusal(compose, root)


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"lr": 0}, "lr must be > 0"),
        ({"lr": -0.1}, "lr must be > 0"),
        ({"lr": None}, "missing required key 'lr' (kind: weights)"),
        ({"update": None}, "missing required key 'update' (kind: weights)"),
        ({"local_epochs": None}, "missing required key 'local_epochs' (kind: weights)"),
        ({"local_batch_size": 3}, "local_batch_size (3) must be <= num_examples (the client's N = 2)"),
        ({"update": "client.npy"}, "missing file"),
    ],
)
def test_weights_manifest_refusals(compose, tmp_path, change, expected):
    root = edit_manifest(write_client(tmp_path / "u", kind="weights"), **change)
    assert expected in refusal(compose, root)


def test_missing_folder_and_manifest(compose, tmp_path):
    assert "is not a folder" in refusal(compose, tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    message = refusal(compose, tmp_path / "empty")
    assert "missing file" in message and "manifest.yaml" in message
    cfg = compose("+scenario=imported")
    with pytest.raises(DeepleakError, match="needs scenario.path=DIR"):
        validate(cfg)


def test_a_state_dict_key_that_is_not_the_models_is_named(compose, tmp_path):
    root = write_client(tmp_path / "u")
    state = torch.load(root / "global.pt")
    state["fc2.weight"] = state.pop("fc.weight")
    torch.save(state, root / "global.pt")
    assert "key 'fc2.weight' is not in the model LeNet's state_dict" in refusal(compose, root)
    del state["fc2.weight"]
    torch.save(state, root / "global.pt")
    assert "lacks the model LeNet's parameter 'fc.weight'" in refusal(compose, root)


def test_a_gradient_entry_of_the_wrong_shape_is_named(compose, tmp_path):
    root = write_client(tmp_path / "u")
    gradient = torch.load(root / "gradient.pt")
    gradient["body.2.bias"] = torch.zeros(5)
    torch.save(gradient, root / "gradient.pt")
    assert "'body.2.bias' has shape [5], the model LeNet's has [6]" in refusal(compose, root)


def test_the_wrong_number_of_arrays_in_an_npz(compose, tmp_path):
    root = write_client(tmp_path / "u", suffix=".npz")
    arrays = dict(np.load(root / "global.npz"))
    np.savez(root / "global.npz", *list(arrays.values())[:-1])
    message = refusal(compose, root)
    assert "global file" in message and "holds 7 arrays" in message and "8 state_dict entries" in message
    root = write_client(tmp_path / "v", suffix=".npz")
    gradient = list(dict(np.load(root / "gradient.npz")).values())
    np.savez(root / "gradient.npz", *gradient, gradient[0])
    assert "holds 9 arrays; the model LeNet has 8 parameters" in refusal(compose, root)


def test_an_npz_array_of_the_wrong_shape_is_named(compose, tmp_path):
    root = write_client(tmp_path / "u", suffix=".npz", kind="weights")
    arrays = list(dict(np.load(root / "client.npz")).values())
    arrays[0], arrays[2] = arrays[2], arrays[0]
    np.savez(root / "client.npz", *arrays)
    assert "array 0 has shape [6, 6, 5, 5], the model's 'body.0.weight'" in refusal(compose, root)


def test_an_npz_of_python_objects_is_refused(compose, tmp_path):
    root = write_client(tmp_path / "u", suffix=".npz")
    arrays = list(dict(np.load(root / "gradient.npz")).values())
    objects = np.empty(1, dtype=object)
    objects[0] = Evil()
    np.savez(root / "gradient.npz", *arrays[:-1], objects)
    message = refusal(compose, root)
    assert message.startswith("refused gradient file") and "holds Python objects" in message


@pytest.mark.parametrize("name", ["global.pt", "gradient.pt"])
def test_a_pickled_os_system_is_refused_in_one_line(compose, tmp_path, name):
    root = write_client(tmp_path / "u")
    torch.save({"fc.weight": torch.zeros(1), "payload": Evil()}, root / name)
    message = refusal(compose, root)
    assert message.startswith("refused ") and str(root / name) in message
    assert "os.system" in message and "reads tensors only" in message


def test_a_file_that_is_not_a_torch_file(compose, tmp_path):
    root = write_client(tmp_path / "u")
    (root / "gradient.pt").write_bytes(b"not a torch file at all")
    assert "cannot read gradient file" in refusal(compose, root)
    root = edit_manifest(write_client(tmp_path / "v"), gradient="gradient.txt")
    (root / "gradient.txt").write_text("1 2 3")
    assert "unknown format .txt" in refusal(compose, root)


def test_non_tensor_entries_are_named(compose, tmp_path):
    root = write_client(tmp_path / "u")
    state = torch.load(root / "global.pt")
    torch.save({**state, "epoch": 3}, root / "global.pt")
    assert "entry 'epoch' is a int, not a tensor" in refusal(compose, root)


def test_what_an_attack_needs_is_named(compose, tmp_path):
    gradient = write_client(tmp_path / "g")
    message = refusal(compose, gradient, "attack=fedavg_replay")
    assert "needs the client's weights" in message and "kind: weights" in message and "'update'" in message
    for method in ("fedavg_fitted", "fedavg_fitted_search", "fedavg_image_search", "fedavg_mean", "fedavg_search",
                   "fedavg_simulated"):
        assert "has kind: gradient" in refusal(compose, gradient, f"labels={method}")
    validate(compose("+scenario=imported", f"scenario.path={gradient}", "labels=fedavg_interpolated"))
    weights = write_client(tmp_path / "w", kind="weights", truth=False)
    assert "has no 'truth'" in refusal(compose, weights, "labels=oracle")
    assert "snapshots" in refusal(compose, weights, "attack=fedavg_snapshots")
    validate(compose("+scenario=imported", f"scenario.path={weights}", "attack=fedavg_replay", "labels=fedavg_fitted_search"))


def test_wrong_labels_is_checked_against_num_examples(compose, tmp_path):
    root = write_client(tmp_path / "u")
    assert "wrong_labels must be between 0 and batch_size (2), got 3" in refusal(compose, root, "wrong_labels=3")
    validate(compose("+scenario=imported", f"scenario.path={root}", "wrong_labels=1", "batch_size=1"))


def test_a_model_that_does_not_fit_num_classes_or_the_image_shape(compose, tmp_path):
    root = edit_manifest(write_client(tmp_path / "u"), image_shape=[3, 16, 16])
    assert "'fc.weight' has shape [10, 54], the model LeNet's has [10, 96]" in refusal(compose, root)
    root = edit_manifest(write_client(tmp_path / "v"), model={**LENET_TARGET, "num_classes": 7})
    assert "has shape [10, 54], the model LeNet's has [7, 54]" in refusal(compose, root)
    # A model whose parameters fit but which cannot run on image_shape inputs.
    root = edit_manifest(write_client(tmp_path / "w"),
                         model={"_target_": "torch.nn.Linear", "in_features": 432, "out_features": 10})
    linear = torch.nn.Linear(432, 10)
    torch.save(linear.state_dict(), root / "global.pt")
    torch.save({name: torch.zeros_like(p) for name, p in linear.named_parameters()}, root / "gradient.pt")
    assert "the model cannot run on inputs of image_shape [3, 12, 12]" in refusal(compose, root)
    edit_manifest(root, image_shape=[1, 1, 432], truth=None)
    assert "outputs of shape [2, 1, 1, 10] for 2 inputs; num_classes is 10" in refusal(compose, root)
