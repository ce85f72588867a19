"""The fully connected victim of the paper's code: MLP 3072-1024-1024-C at 32 px."""

from __future__ import annotations

import math

from torch import Tensor, nn

from deepleak.errors import DeepleakError
from deepleak.models.base import Victim
from deepleak.models.layers import activation


class MLP(Victim):
    """Flatten -> Linear(C*H*W, hidden) -> act -> Linear(hidden, hidden) -> act ->
    Linear(hidden, num_classes): (N, C, H, W) -> logits (N, num_classes).

    At 32 px RGB with ``hidden=1024`` this is the paper's 3072-1024-1024-C network. The
    last layer (``fc``) is the classifier; its inputs are the second hidden layer's
    activations. PyTorch's default initialisation; ``checkpoint``: a state dict to load instead.
    """

    def __init__(
        self,
        num_classes: int,
        image_shape: tuple[int, int, int] = (3, 32, 32),
        hidden: int = 1024,
        activation_fn: str = "sigmoid",
        checkpoint: str | None = None,
    ) -> None:
        super().__init__()
        if hidden < 1:
            raise DeepleakError(f"model.hidden must be >= 1, got {hidden}")
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(math.prod(image_shape), hidden),
            activation(activation_fn),
            nn.Linear(hidden, hidden),
            activation(activation_fn),
        )
        self.fc = nn.Linear(hidden, num_classes)
        self.load_weights(checkpoint)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.body(x))
