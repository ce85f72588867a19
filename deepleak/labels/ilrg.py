"""iLRG (Ma et al., "Instance-wise Batch Label Restoration via Gradients in Federated
Learning", ICLR 2023; docs/method.md (baseline label methods)).

Classifier z = W O + b, mean cross-entropy over K samples, counts lambda (N,):

    dL/dW[c, :] = (1/K) sum_k (p[k,c] - y[k,c]) O_k        (N, M)
    dL/db[c]    = (1/K) sum_k (p[k,c] - y[k,c])            (N,)

so e_c = dL/dW[c] / dL/db[c] is a weighted mean feature of the batch; for a present class
(dL/db[c] < 0, dominated by -y) it is close to the mean feature of the class-c samples.
Feeding e_c through the classifier and softmax gives P_hat[c] (a row of the N x N matrix), the
softmax a class-c sample is estimated to have. Then sum_k p_k ~ P_hat^T lambda, and the bias
gradient gives K db = P_hat^T lambda - lambda; with sum(lambda) = K:

    [1^T ; P_hat^T - I] lambda = [K ; K db]     ((N+1) x N, least squares)

rounded to K labels. No dummy inputs, no assumption on the sign of the features; it needs the
bias gradient. It is exact when all samples share one feature vector (then every e_c is that
vector); otherwise e_c mixes in the features of other samples weighted by their p[k,c], and
softmax(W mean(O) + b) differs from mean(softmax(W O + b)) for a class with several samples.
"""

from __future__ import annotations

import torch

from deepleak.labels.base import counts_to_labels, last_layer_gradient, require_bias
from deepleak.models import classifier
from deepleak.scenarios.base import Observation


def class_embedding_softmax(observation: Observation) -> torch.Tensor:
    """P_hat (N, N), float64: row c is softmax(W e_c + b) for the class-wise embedding
    e_c = dL/dW[c] / dL/db[c]. Needs a bias in the classifier (raises DeepleakError)."""
    require_bias(ILRG.name, observation)
    weight_gradient, bias_gradient = last_layer_gradient(observation)
    dw, db = weight_gradient.double().cpu(), bias_gradient.double().cpu()
    layer = classifier(observation.model)
    w = layer.weight.detach().double().cpu()
    b = layer.bias.detach().double().cpu()
    # A class with db exactly 0 carries no embedding (its row would be 0/0); a zero embedding
    # (softmax of b) keeps the system finite, and such a class has p ~ 0 on every sample anyway.
    usable = db.abs() > torch.finfo(torch.float64).tiny
    safe = torch.where(usable, db, torch.ones_like(db))
    embeddings = torch.where(usable[:, None], dw / safe[:, None], torch.zeros_like(dw))  # (N, M)
    return torch.softmax(embeddings @ w.T + b, dim=1)


class ILRG:
    """Least squares on class-wise embeddings; ``rounding`` as in counts_to_labels."""

    name = "ilrg"
    needs = "a bias in the classifier layer"

    def __init__(self, rounding: str = "largest_remainder") -> None:
        self.rounding = rounding

    def counts(self, observation: Observation) -> torch.Tensor:
        """Real-valued class counts lambda_hat (N,), float64, before rounding."""
        p_hat = class_embedding_softmax(observation)
        _, bias_gradient = last_layer_gradient(observation)
        db = bias_gradient.double().cpu()
        k, n = observation.recipe.num_samples, p_hat.shape[0]
        a = torch.cat([torch.ones(1, n, dtype=torch.float64), p_hat.T - torch.eye(n, dtype=torch.float64)])
        rhs = torch.cat([torch.tensor([float(k)], dtype=torch.float64), k * db])
        return torch.linalg.lstsq(a, rhs[:, None], driver="gelsd").solution[:, 0]

    def restore(self, observation: Observation) -> torch.Tensor:
        return counts_to_labels(self.counts(observation).numpy(), observation.recipe.num_samples, self.rounding)
