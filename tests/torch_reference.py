"""PyTorch reference models for the parity tests, in plain ``torch.nn``.

torchvision's ResNet, ResNeXt and VGG16 with torchvision's module names (so their
``state_dict`` keys equal torchvision's), and the four CelebA models of the source
projects written from their texts.
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, block, layers, num_classes=1000, groups=1, width_per_group=64):
        super().__init__()
        self.inplanes = 64
        self.groups, self.base_width = groups, width_per_group
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], 2)
        self.layer3 = self._make_layer(block, 256, layers[2], 2)
        self.layer4 = self._make_layer(block, 512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample, self.groups, self.base_width)]
        self.inplanes = planes * block.expansion
        layers += [
            block(self.inplanes, planes, groups=self.groups, base_width=self.base_width)
            for _ in range(1, blocks)
        ]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes=1000):
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes)


def resnext50_32x4d(num_classes=1000):
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, groups=32, width_per_group=4)


class VGG(nn.Module):
    # fmt: off
    CONFIG = (
        64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
    )
    # fmt: on

    def __init__(self, num_classes=1000):
        super().__init__()
        layers, channels = [], 3
        for item in self.CONFIG:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU(inplace=True)]
                channels = item
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(True),
            nn.Dropout(),
            nn.Linear(4096, 4096),
            nn.ReLU(True),
            nn.Dropout(),
            nn.Linear(4096, num_classes),
        )
        # Variance-preserving init: under PyTorch's default init VGG16's activations shrink
        # until its logits no longer depend on the image.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.uniform_(m.bias, -0.1, 0.1)

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def vgg16(num_classes=1000):
    return VGG(num_classes)


# ------------------------------------------------------------ the source models
class VGG16DST(nn.Module):
    """vgg16_dst: VGG16 (to its 1000 logits) + added fully connected layers, 8 sigmoids."""

    def __init__(self, hidden=512, num_tasks=8):
        super().__init__()
        self.vgg = vgg16()
        self.fc = nn.Sequential(
            nn.Linear(1000, hidden), nn.ReLU(), nn.Dropout(0.5), nn.Linear(hidden, num_tasks)
        )

    def forward(self, x):
        return torch.sigmoid(self.fc(self.vgg(x)))


class MTH(nn.Module):
    """resnet18_gray: one task head, as in the source text."""

    def __init__(self, input_dim):
        super().__init__()
        self.fc1 = nn.Linear(input_dim, 512)
        self.fc2 = nn.Linear(512, 1)

    def forward(self, x):
        return self.fc2(nn.functional.relu(self.fc1(x))).squeeze()


class MTM(nn.Module):
    """resnet18_gray: ResNet18 backbone with a 1-channel 3x3 stem, classifier and 8 heads."""

    def __init__(self):
        super().__init__()
        resnet18_model = resnet18()
        resnet18_model.conv1 = nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.backbone = nn.Sequential(*list(resnet18_model.children())[:-1])
        self.classifier = nn.Sequential(
            nn.Linear(512, 4096),
            nn.ReLU(),
            nn.Dropout(p=0.5),
            nn.Linear(4096, 4096),
            nn.ReLU(),
            nn.Dropout(p=0.5),
        )
        self.heads = nn.ModuleList([MTH(4096) for _ in range(8)])

    def forward(self, x):
        x = self.backbone(x)
        x = self.classifier(x.view(x.size(0), -1))
        return [head(x) for head in self.heads]


def resnext50_40():
    """resnext50_mse: ResNeXt50_32x4d with its fc replaced by Linear(2048, 40)."""
    model = resnext50_32x4d()
    model.fc = nn.Linear(2048, 40)
    return model


def _mlp(hidden, units):
    return nn.Sequential(nn.Linear(512, hidden), nn.ReLU(), nn.Linear(hidden, units))


class MultiTaskCelebAModel(nn.Module):
    """resnet18_landmarks: shared ResNet18, attribute head (3 logits) and landmark head (10 values)."""

    def __init__(self, hidden=256):
        super().__init__()
        self.backbone = resnet18()
        self.backbone.fc = nn.Identity()
        self.attr_head = _mlp(hidden, 3)
        self.landmark_head = _mlp(hidden, 10)

    def forward(self, x):
        features = self.backbone(x)
        return self.attr_head(features), self.landmark_head(features)


class SingleTaskCelebAModel(nn.Module):
    """resnet18_landmarks baselines: ResNet18 and one head."""

    def __init__(self, units, hidden=256):
        super().__init__()
        self.backbone = resnet18()
        self.backbone.fc = nn.Identity()
        self.head = _mlp(hidden, units)

    def forward(self, x):
        return self.head(self.backbone(x))


def randomize_batch_norm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Gives every BatchNorm non-trivial affine parameters and running statistics."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(0.5 + torch.rand(n, generator=generator))
                module.bias.copy_(0.2 * torch.randn(n, generator=generator))
                module.running_mean.copy_(0.2 * torch.randn(n, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
    return model.eval()
