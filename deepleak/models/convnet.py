"""The "ConvNet" of Inverting Gradients (Geiping et al., 2020; ``inversefed``'s ConvNet):
eight 3x3 conv-BN-activation blocks, two 3x3 max-pools and one linear layer."""

from __future__ import annotations

from torch import Tensor, nn

from deepleak.errors import DeepleakError
from deepleak.models.base import Victim
from deepleak.models.layers import activation

# Output channels of the eight convs as multiples of ``width``; "pool" is MaxPool2d(3).
# inversefed lists a ninth block under a repeated name (conv6), which its OrderedDict
# collapses: the network it builds, and this one, has eight.
_LAYOUT = (1, 2, 2, 4, 4, 4, "pool", 4, 4, "pool")


class ConvNet(Victim):
    """Conv-BN-act x 6, max-pool 3, conv-BN-act x 2, max-pool 3, Linear:
    (N, C, H, W) -> logits (N, num_classes).

    Channels are ``width * (1, 2, 2, 4, 4, 4 | 4, 4)``; each max-pool divides the side by 3
    (floor), so at 32 px the classifier has 4 * width * 3 * 3 = 36 * width inputs, as in
    inversefed. Needs at least 9 px. PyTorch's default initialisation; ``checkpoint``: a
    state dict to load instead.
    """

    def __init__(
        self,
        num_classes: int,
        image_shape: tuple[int, int, int] = (3, 32, 32),
        width: int = 64,
        activation_fn: str = "relu",
        checkpoint: str | None = None,
    ) -> None:
        super().__init__()
        channels, height, width_px = image_shape
        if width < 1:
            raise DeepleakError(f"model.width must be >= 1, got {width}")
        if min(height, width_px) < 9:
            raise DeepleakError(f"the ConvNet needs images of at least 9 px (two 3x3 max-pools), got {height}x{width_px}")
        layers: list[nn.Module] = []
        in_channels = channels
        for item in _LAYOUT:
            if item == "pool":
                layers.append(nn.MaxPool2d(3))
                height, width_px = height // 3, width_px // 3
                continue
            out_channels = int(item) * width
            layers += [
                nn.Conv2d(in_channels, out_channels, 3, padding=1),
                nn.BatchNorm2d(out_channels),
                activation(activation_fn),
            ]
            in_channels = out_channels
        layers.append(nn.Flatten())
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(in_channels * height * width_px, num_classes)
        self.load_weights(checkpoint)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.body(x))
