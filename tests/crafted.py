"""Crafted cases whose answer is known exactly (label restoration) and a small real attack
case, shared by tests in several folders (tests/ is on pytest's pythonpath)."""

import functools

import torch
import torch.nn.functional as F

from deepleak.attacks import GradientMatching
from deepleak.attacks.parts.distance import L2
from deepleak.data import SampleDataset
from deepleak.models import LeNet, build_model
from deepleak.scenarios import FedAvg, FedSGD, PrivateBatch
from deepleak.scenarios.base import Observation, Recipe

LENET_CFG = {"_target_": "deepleak.models.LeNet", "width": 12, "activation_fn": "sigmoid", "init_scale": 0.5}
MLP_CFG = {"_target_": "deepleak.models.MLP", "hidden": 1024, "activation_fn": "sigmoid"}  # conf/model/mlp.yaml

BATCHES_WITH_DUPLICATES = [
    [3],
    [3, 3, 3, 0, 7, 7],
    [5] * 8,
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [9, 9, 1, 1, 1, 1, 4, 2, 2, 2, 2, 2, 0, 0, 8, 6],
    [2] * 15 + [6],
]


def labels_of(t):
    assert isinstance(t, torch.Tensor) and t.dtype == torch.int64 and t.ndim == 1
    return t.tolist()


def constant_feature_lenet(num_classes, seed=0):
    """A DLG LeNet whose body weights and biases are all zero: every penultimate feature is
    sigmoid(0) = 0.5 for every input, so logits = 0.5 * W 1 + b and the softmax is the same
    for every input. Zero-shot's replacement of O_k and p_k by dummy means is then exact, and
    so are iLRG's class embeddings dW_c / db_c (all equal to the feature vector)."""
    model = build_model(LENET_CFG, num_classes, (3, 32, 32), seed=seed)
    with torch.no_grad():
        for p in model.body.parameters():
            p.zero_()
    return model


def observation_from(model, weight_gradient, bias_gradient, k, num_classes, image_shape=(3, 32, 32)):
    """An Observation carrying the given classifier gradients (body gradient zero)."""
    by_name = {"fc.weight": weight_gradient, "fc.bias": bias_gradient}
    gradient = tuple(by_name.get(name, torch.zeros_like(q)) for name, q in model.named_parameters())
    recipe = Recipe(num_samples=k, batch_size=k, num_classes=num_classes, image_shape=image_shape)
    return Observation(scenario="fedsgd", model=model, recipe=recipe, gradient=gradient)


def confident_head(labels, num_classes=10, seed=0, norm=0.75):
    """A LeNet-12 whose classifier is a trained-like head: class prototypes in (0, 1)^768,
    W the centred prototypes (norm 0.75), and a batch whose features are 70% their class's
    prototype, so every sample is classified right with softmax 0.79-0.92 (larger ``norm``:
    more confident). The observation
    carries the closed-form classifier gradient of these features (the body is not used)."""
    model = build_model(LENET_CFG, num_classes, (3, 32, 32), seed=seed)
    generator = torch.Generator().manual_seed(seed)
    prototypes = torch.rand(num_classes, model.fc.in_features, generator=generator)
    labels = torch.as_tensor(labels)
    features = 0.7 * prototypes[labels] + 0.3 * torch.rand(len(labels), model.fc.in_features, generator=generator)
    with torch.no_grad():
        centred = prototypes - prototypes.mean(0)
        model.fc.weight.copy_(norm * centred / centred.norm(dim=1, keepdim=True))
        model.fc.bias.copy_(0.1 * torch.randn(num_classes, generator=generator))
        softmax = torch.softmax(model.fc(features), dim=1)
    residual = softmax - F.one_hot(labels, num_classes).float()
    k = len(labels)
    return observation_from(model, residual.T @ features / k, residual.mean(0), k, num_classes), softmax


def closed_form_observation(model, labels, num_classes, image_shape=(3, 32, 32)):
    """Observation whose classifier gradient is built from the closed form
    dL/dW = (1/K) (P - Y)^T O, dL/db = mean(P - Y) on random inputs, with the body gradient zero."""
    labels = torch.as_tensor(labels)
    k = len(labels)
    with torch.no_grad():
        features = model.body(torch.rand(k, *image_shape))
        p = torch.softmax(model.fc(features), dim=1)
    residual = p - F.one_hot(labels, num_classes).to(p.dtype)
    return observation_from(model, residual.T @ features / k, residual.mean(0), k, num_classes, image_shape)


def unrolled_classifier_residual(update, start, y, end=None, exponent=1.0):
    """The classifier's T full-batch steps written out with the (C, M) weights, one fit: step t
    sees (1 - a_t) start + a_t end, a_t = (t / (T - 1))^exponent (fixed features without end).
    The reference for deepleak.labels.classifier_fit.residual's Gram form."""
    end = start if end is None else end
    w, b = update.w0, update.b0
    for t in range(update.steps):
        a = (t / max(update.steps - 1, 1)) ** exponent
        h = (1 - a) * start + a * end
        g = (torch.softmax(h @ w.T + (b if b is not None else 0), dim=1) - y) / update.num_samples
        w = w - update.lr * g.T @ h
        if b is not None:
            b = b - update.lr * g.sum(dim=0)
    error = (w - update.w0 - update.dw).pow(2).sum() / update.dw.pow(2).sum()
    if b is not None:
        error = error + (b - update.b0 - update.db).pow(2).sum() / update.db.pow(2).sum()
    return error


# --- a small real attack case: sample-set images, untrained LeNet, FedSGD ----------------
def observe(k: int, width: int = 12, seed: int = 0, classes: int = 10, resolution: int = 32):
    data = SampleDataset(num_classes=classes, resolution=resolution, crops_per_class=4)
    indices = [c * 4 for c in range(k)]  # distinct classes
    images, labels = data.batch(indices)
    torch.manual_seed(seed)
    model = LeNet(classes, image_shape=(3, resolution, resolution), width=width)
    return FedSGD().observe(model, PrivateBatch(images, labels), classes), images, labels


def lbfgs(iterations: int, **kw) -> GradientMatching:
    optimizer = functools.partial(torch.optim.LBFGS, lr=1.0, max_iter=20, history_size=100, line_search_fn="strong_wolfe")
    return GradientMatching(L2(), optimizer, iterations=iterations, box=False, **kw)


# --- a tiny FedAvg client: random 12 px images, LeNet width 6 ------------------------------
TINY_LENET = {"_target_": "deepleak.models.LeNet", "width": 6, "activation_fn": "sigmoid", "init_scale": 0.5}


def tiny_fedavg(n=4, b=2, epochs=2, lr=0.05, seed=0):
    """(private batch, FedAvg observation): N = ``n`` random 12 px images of classes 0..n-1."""
    model = build_model(TINY_LENET, 10, (3, 12, 12), seed=seed)
    generator = torch.Generator().manual_seed(seed)
    batch = PrivateBatch(torch.rand(n, 3, 12, 12, generator=generator), torch.arange(n) % 10)
    return batch, FedAvg(local_batch_size=b, epochs=epochs, lr=lr, seed=seed).observe(model, batch, 10)


# --- the noise floor of a PSNR bar ---------------------------------------------------------
@functools.lru_cache(maxsize=None)
def sample_mean_image(resolution: int = 32, num_classes: int = 10, crops_per_class: int = 64) -> torch.Tensor:
    """The sample set's mean image (3, resolution, resolution): every crop of every class."""
    data = SampleDataset(num_classes=num_classes, resolution=resolution, crops_per_class=crops_per_class)
    images, _ = data.batch(range(len(data)))
    return images.mean(0)


def noise_floor_psnr(images, seed: int = 0, mean_image=None) -> float:
    """The mean PSNR a reconstruction scores against ``images`` (K, C, H, W) in [0, 1] with no
    information from the update: the higher of uniform noise U[0, 1] (drawn with ``seed``) and
    the data set's mean image (``mean_image`` (C, H, W); the sample set's at the images' side
    when None). A PSNR bar that claims the attack recovered something sits >= 10 dB above it."""
    from deepleak.metrics import psnr

    images = torch.as_tensor(images, dtype=torch.float32)
    noise = torch.rand(images.shape, generator=torch.Generator().manual_seed(seed))
    if mean_image is None:
        mean_image = sample_mean_image(images.shape[-1])
    mean = torch.as_tensor(mean_image, dtype=torch.float32).expand_as(images)
    return float(max(psnr(noise, images).mean(), psnr(mean, images).mean()))
