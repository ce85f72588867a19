"""ResNet-18 and ResNet-50 in the ImageNet layout, with a choice of activation.

The layout is torchvision's: a 7x7 stride-2 stem and a 3x3 stride-2 max-pool, four stages
(basic blocks for ResNet-18, bottleneck blocks for ResNet-50), global average pool, one
linear layer. Parameter and buffer names match ``torchvision.models.resnet18/50``, so a
torchvision state dict (1000 classes, ``width=64``) loads as ``model.checkpoint``.

Inputs of any size from 32 px work (224 px is ImageNet's): the average pool is adaptive.
At 32 px the last stage is 1x1, so batch norm in train mode needs a batch of at least 2.
"""

from __future__ import annotations

from torch import Tensor, nn

from deepleak.errors import DeepleakError
from deepleak.models.base import Victim
from deepleak.models.layers import activation


def _downsample(in_planes: int, planes: int, stride: int) -> nn.Module | None:
    """1x1 conv + BN on the shortcut when the block changes shape (torchvision's naming)."""
    if stride == 1 and in_planes == planes:
        return None
    return nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))


class BasicBlock(nn.Module):
    """Two 3x3 convs with BN: (N, in_planes, H, W) -> (N, planes, H/stride, W/stride)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int, activation_fn: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = activation(activation_fn)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = activation(activation_fn)
        self.downsample = _downsample(in_planes, planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride) -> 1x1 convs with BN, output ``4 * planes`` channels:
    (N, in_planes, H, W) -> (N, 4 * planes, H/stride, W/stride). Stride on the 3x3 conv
    (torchvision's "ResNet v1.5")."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int, activation_fn: str) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = activation(activation_fn)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = activation(activation_fn)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.act3 = activation(activation_fn)
        self.downsample = _downsample(in_planes, out_planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.act3(out + identity)


class ImageNetResNet(Victim):
    """ResNet, ImageNet layout: (N, C, H, W) -> logits (N, num_classes).

    Stem conv 7x7/2 (``width`` channels) + BN + activation + max-pool 3x3/2; stages of
    ``blocks`` blocks with ``width * 2**i`` planes (stride 2 from the second stage on);
    adaptive average pool; ``fc`` (the classifier) on ``8 * width * expansion`` features.
    Convs use He (fan-out) init and BN starts at weight 1, bias 0, as in torchvision;
    ``checkpoint``: a state dict to load instead (a torchvision one fits).
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        blocks: tuple[int, int, int, int],
        num_classes: int,
        image_shape: tuple[int, int, int],
        width: int,
        activation_fn: str,
        checkpoint: str | None = None,
    ) -> None:
        super().__init__()
        if width < 1:
            raise DeepleakError(f"model.width must be >= 1, got {width}")
        channels = image_shape[0]
        self.conv1 = nn.Conv2d(channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.act = activation(activation_fn)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_planes = width
        for index, count in enumerate(blocks):
            planes = width * 2**index
            stride = 1 if index == 0 else 2
            layer = []
            for position in range(count):
                layer.append(block(in_planes, planes, stride if position == 0 else 1, activation_fn))
                in_planes = planes * block.expansion
            setattr(self, f"layer{index + 1}", nn.Sequential(*layer))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_planes, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        self.load_weights(checkpoint)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.act(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.flatten(self.avgpool(x)))


class ResNet18ImageNet(ImageNetResNet):
    """ResNet-18, ImageNet layout (basic blocks 2-2-2-2; 512 features at ``width=64``)."""

    def __init__(
        self,
        num_classes: int,
        image_shape: tuple[int, int, int] = (3, 224, 224),
        width: int = 64,
        activation_fn: str = "relu",
        checkpoint: str | None = None,
    ) -> None:
        super().__init__(BasicBlock, (2, 2, 2, 2), num_classes, image_shape, width, activation_fn, checkpoint)


class ResNet50(ImageNetResNet):
    """ResNet-50, ImageNet layout (bottleneck blocks 3-4-6-3; 2048 features at ``width=64``)."""

    def __init__(
        self,
        num_classes: int,
        image_shape: tuple[int, int, int] = (3, 224, 224),
        width: int = 64,
        activation_fn: str = "relu",
        checkpoint: str | None = None,
    ) -> None:
        super().__init__(Bottleneck, (3, 4, 6, 3), num_classes, image_shape, width, activation_fn, checkpoint)
