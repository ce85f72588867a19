"""The LeNet of DLG (Zhu et al., 2019): three sigmoid conv layers and one linear layer."""

from __future__ import annotations

from torch import Tensor, nn

from deepleak.models.base import Victim
from deepleak.models.layers import activation, init_uniform


class LeNet(Victim):
    """Conv(5x5, stride 2) -> Conv(5x5, stride 2) -> Conv(5x5, stride 1) -> Linear.

    With ``width=12`` and 32 px inputs the linear layer has 12 * 8 * 8 = 768 inputs, as in
    DLG. ``init_scale`` re-draws all parameters from U(-s, s) (DLG uses 0.5); ``None``
    keeps PyTorch's default initialisation. ``checkpoint``: a state dict to load instead.
    """

    def __init__(
        self,
        num_classes: int,
        image_shape: tuple[int, int, int] = (3, 32, 32),
        width: int = 12,
        activation_fn: str = "sigmoid",
        init_scale: float | None = 0.5,
        checkpoint: str | None = None,
    ) -> None:
        super().__init__()
        channels, height, width_px = image_shape
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 5, padding=2, stride=2),
            activation(activation_fn),
            nn.Conv2d(width, width, 5, padding=2, stride=2),
            activation(activation_fn),
            nn.Conv2d(width, width, 5, padding=2, stride=1),
            activation(activation_fn),
            nn.Flatten(),
        )
        # Two stride-2 convs with padding 2 and kernel 5 give ceil(n / 4).
        features = width * ((height + 3) // 4) * ((width_px + 3) // 4)
        self.fc = nn.Linear(features, num_classes)
        if init_scale is not None:
            init_uniform(self, init_scale)
        self.load_weights(checkpoint)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.body(x))
