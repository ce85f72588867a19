"""ResNet-18 in the CIFAR layout (3x3 stem, no max-pool) with a choice of activation."""

from __future__ import annotations

from torch import Tensor, nn

from deepleak.models.base import Victim
from deepleak.models.layers import activation
from deepleak.models.resnet_imagenet import BasicBlock  # the same block; only the stem differs


class ResNet18(Victim):
    """ResNet-18 for small images: 3x3 stem, four stages of two basic blocks, global
    average pool, one linear layer. ``activation_fn='sigmoid'`` is the paper's variant;
    ``width`` scales the channel counts (64 is the standard network); ``checkpoint``: a state
    dict to load instead of the initial weights."""

    def __init__(
        self,
        num_classes: int,
        image_shape: tuple[int, int, int] = (3, 32, 32),
        width: int = 64,
        activation_fn: str = "relu",
        checkpoint: str | None = None,
    ) -> None:
        super().__init__()
        channels = image_shape[0]
        self.stem = nn.Sequential(
            nn.Conv2d(channels, width, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(width),
            activation(activation_fn),
        )
        stages = []
        in_planes = width
        for index, planes in enumerate((width, 2 * width, 4 * width, 8 * width)):
            stride = 1 if index == 0 else 2
            stages.append(BasicBlock(in_planes, planes, stride, activation_fn))
            stages.append(BasicBlock(planes, planes, 1, activation_fn))
            in_planes = planes
        self.stages = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(in_planes, num_classes)
        self.load_weights(checkpoint)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.stages(self.stem(x))))
