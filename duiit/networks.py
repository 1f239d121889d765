"""The networks: ResNet translator (CycleGAN generator), PatchGAN discriminator, slice predictor.

Sizes come from a JSON-able config so a bundle can rebuild them without executing code.
"""

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .head_depth import head_depth


@dataclass
class NetworkConfig:
    image_size: int = 256
    generator_width: int = 64       # ngf
    generator_blocks: int = 9       # residual blocks
    generator_downsamplings: int = 2
    discriminator_width: int = 64   # ndf
    discriminator_layers: int = 3   # 3 gives the 70x70 PatchGAN
    predictor_width: int = 32
    predictor_depth: int = 4        # conv stages, each halving the size
    discriminator_head_depth: int = 0  # >0: D also sees each pixel's depth from the head's edge, up to this
    predictor_max_pool: int = 0     # 1: C pools its feature map by the maximum (a finding anywhere), 0: the mean

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict):
        known = {k: int(v) for k, v in values.items() if k in cls.__dataclass_fields__}
        return cls(**known)


PRESETS = {
    # CycleGAN reference: 9 blocks at 256 px.
    "reference": NetworkConfig(),
    # Small enough to train on a laptop CPU in minutes.
    "small": NetworkConfig(image_size=64, generator_width=16, generator_blocks=3, discriminator_width=16,
                           discriminator_layers=2, predictor_width=16, predictor_depth=3),
}


class ResidualBlock(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(width, width, 3), nn.InstanceNorm2d(width), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(width, width, 3), nn.InstanceNorm2d(width))

    def forward(self, x):
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """c7s1-w, d2w, d4w, residual blocks, u2w, uw, c7s1-1, tanh (Zhu et al. 2017)."""

    def __init__(self, config: NetworkConfig):
        super().__init__()
        width = config.generator_width
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(1, width, 7), nn.InstanceNorm2d(width), nn.ReLU(True)]
        for _ in range(config.generator_downsamplings):
            layers += [nn.Conv2d(width, width * 2, 3, stride=2, padding=1), nn.InstanceNorm2d(width * 2), nn.ReLU(True)]
            width *= 2
        layers += [ResidualBlock(width) for _ in range(config.generator_blocks)]
        for _ in range(config.generator_downsamplings):
            layers += [nn.ConvTranspose2d(width, width // 2, 3, stride=2, padding=1, output_padding=1),
                       nn.InstanceNorm2d(width // 2), nn.ReLU(True)]
            width //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, 1, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


class PatchDiscriminator(nn.Module):
    """PatchGAN: a grid of real/fake scores, each seeing a 70x70 patch with 3 layers. With head_depth > 0 it
    also sees how deep each pixel lies in the head (duiit/head_depth.py), so it can tell a skull drawn on
    the wrong ring from a real one; it is computed from the image itself (or given: the map of the image a
    translation came from, TrainingOptions.depth_from_input), so the input is still one image."""

    def __init__(self, config: NetworkConfig):
        super().__init__()
        width = config.discriminator_width
        self.head_depth = config.discriminator_head_depth
        layers = [nn.Conv2d(2 if self.head_depth else 1, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        for n in range(1, config.discriminator_layers + 1):
            stride = 2 if n < config.discriminator_layers else 1
            out = config.discriminator_width * min(2 ** n, 8)
            layers += [nn.Conv2d(width, out, 4, stride=stride, padding=1), nn.InstanceNorm2d(out),
                       nn.LeakyReLU(0.2, True)]
            width = out
        layers += [nn.Conv2d(width, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x, depth=None):
        """depth: the depth map to judge x with (a translation judged by the depth of the image it came
        from); None: x's own."""
        if self.head_depth:
            x = torch.cat([x, head_depth(x, self.head_depth) if depth is None else depth], 1)
        return self.model(x)


class SlicePredictor(nn.Module):
    """A small CNN on one CT slice: class logits, or one regressed value."""

    def __init__(self, config: NetworkConfig, outputs: int):
        super().__init__()
        layers, width_in = [], 1
        for n in range(config.predictor_depth):
            width = config.predictor_width * 2 ** n
            layers += [nn.Conv2d(width_in, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(True),
                       nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(True),
                       nn.MaxPool2d(2)]
            width_in = width
        self.features = nn.Sequential(*layers)
        # The mean weighs a small lesion by its share of the slice; the maximum by how lesion-like its most
        # lesion-like spot is (as in weakly supervised detection).
        pool = nn.AdaptiveMaxPool2d(1) if config.predictor_max_pool else nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(pool, nn.Flatten(), nn.Linear(width_in, outputs))

    def forward(self, x):
        return self.head(self.features(x))


class CycleTranslator(nn.Module):
    """G: source -> CT and F: CT -> source, run together so one forward call serves a whole step."""

    def __init__(self, config: NetworkConfig):
        super().__init__()
        self.to_target = ResnetGenerator(config)   # G
        self.to_source = ResnetGenerator(config)   # F

    def forward(self, source, target, identity: bool):
        fake_target = self.to_target(source)
        fake_source = self.to_source(target)
        out = {"fake_target": fake_target, "fake_source": fake_source,
               "rec_source": self.to_source(fake_target), "rec_target": self.to_target(fake_source)}
        if identity:
            out["idt_target"] = self.to_target(target)
            out["idt_source"] = self.to_source(source)
        return out


class Discriminators(nn.Module):
    def __init__(self, config: NetworkConfig):
        super().__init__()
        self.target = PatchDiscriminator(config)   # D_X
        self.source = PatchDiscriminator(config)   # D_S

    def forward(self, target, source, target_depth=None, source_depth=None):
        return self.target(target, target_depth), self.source(source, source_depth)


def predictor_outputs(task: str, n_classes: int) -> int:
    return n_classes if task == "classification" else 1


def init_weights(module: nn.Module, generator: torch.Generator) -> None:
    """N(0, 0.02) for convolutions as in CycleGAN, from an explicit RNG so runs are reproducible."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            with torch.no_grad():
                m.weight.normal_(0.0, 0.02, generator=generator)
                if m.bias is not None:
                    m.bias.zero_()
