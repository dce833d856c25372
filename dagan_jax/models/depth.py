"""The face depth network: monodepth2's ResNet encoder and depth decoder.

DaGAN (Hong et al., CVPR 2022, Sec. 3.1) learns face depth self-supervised
with the architecture of monodepth2 (Godard et al., "Digging Into
Self-Supervised Monocular Depth Estimation", ICCV 2019): a ResNet-18 or
ResNet-50 encoder and a U-Net-like decoder predicting a sigmoid disparity
``disp`` at 4 scales.

Conventions:

* Input images NHWC in [0, 1]; the encoder normalises them itself with
  monodepth2's ``(x - 0.45) / 0.225`` (same constants on every channel).
* Encoder output: a list of 5 feature maps at strides 2, 4, 8, 16, 32 with
  ``num_ch_enc`` = [64, 64, 128, 256, 512] (ResNet-18) or
  [64, 256, 512, 1024, 2048] (ResNet-50) channels.
* Decoder output: a dict keyed ``'disp{s}'`` (string keys, so the dict is a
  plain pytree; the official code uses ``('disp', s)``), each
  ``(B, H / 2**s, W / 2**s, 1)`` in (0, 1). DaGAN feeds ``disp0`` -- the raw
  sigmoid output, not converted to depth -- to the keypoint detector and
  the generator.
* Parameter names follow torchvision / monodepth2 (``encoder/layer1_0/conv1``,
  ``decoder_N/conv/conv``); the unused ``encoder.fc`` classifier of the
  checkpoint is not built.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dagan_jax.models.layers import (BatchNorm, Conv2d, conv_bn,
                                     kaiming_normal_fan_out, upsample_nearest2)

Array = jax.Array

RESNET_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}
MONODEPTH_MEAN = 0.45
MONODEPTH_STD = 0.225


def num_ch_enc(num_layers: int) -> tuple[int, ...]:
  """Channels of the 5 encoder features for a ResNet of ``num_layers``."""
  if num_layers not in RESNET_BLOCKS:
    raise ValueError(f"ResNet depth {num_layers} not supported; expected "
                     f"one of {sorted(RESNET_BLOCKS)}")
  if num_layers > 34:
    return (64, 256, 512, 1024, 2048)
  return (64, 64, 128, 256, 512)


def _conv(features: int, k: int, stride: int = 1, padding: int = 0,
          name: str | None = None) -> Conv2d:
  return Conv2d(features, k, stride=stride, padding=padding, use_bias=False,
                kernel_init=kaiming_normal_fan_out, name=name)


class BasicBlock(nn.Module):
  """torchvision's ``BasicBlock`` (ResNet-18/34): two 3x3 convs + identity."""
  planes: int
  stride: int = 1
  downsample: bool = False

  @nn.compact
  def __call__(self, x: Array) -> Array:
    out = conv_bn(self, x, _conv(self.planes, 3, self.stride, 1, name="conv1"),
                  BatchNorm(name="bn1"))
    out = conv_bn(self, nn.relu(out), _conv(self.planes, 3, 1, 1, name="conv2"),
                  BatchNorm(name="bn2"))
    identity = x
    if self.downsample:
      identity = conv_bn(self, x, _conv(self.planes, 1, self.stride,
                                        name="downsample_0"),
                         BatchNorm(name="downsample_1"))
    return nn.relu(out + identity)


class Bottleneck(nn.Module):
  """torchvision's ``Bottleneck`` (ResNet-50, "v1.5": stride in the 3x3)."""
  planes: int
  stride: int = 1
  downsample: bool = False
  expansion: int = 4

  @nn.compact
  def __call__(self, x: Array) -> Array:
    out = conv_bn(self, x, _conv(self.planes, 1, name="conv1"),
                  BatchNorm(name="bn1"))
    out = conv_bn(self, nn.relu(out), _conv(self.planes, 3, self.stride, 1,
                                            name="conv2"),
                  BatchNorm(name="bn2"))
    out = conv_bn(self, nn.relu(out), _conv(self.planes * self.expansion, 1,
                                            name="conv3"),
                  BatchNorm(name="bn3"))
    identity = x
    if self.downsample:
      identity = conv_bn(self, x, _conv(self.planes * self.expansion, 1,
                                        self.stride, name="downsample_0"),
                         BatchNorm(name="downsample_1"))
    return nn.relu(out + identity)


def max_pool_3x3_s2(x: Array) -> Array:
  """``nn.MaxPool2d(3, stride=2, padding=1)`` (padding never wins the max)."""
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


class ResNetTrunk(nn.Module):
  """torchvision ResNet without ``avgpool``/``fc``, returning monodepth2's 5
  features. ``in_channels`` is ``3 * num_input_images``. Convs with
  their BatchNorm go through :func:`~dagan_jax.models.layers.conv_bn`
  (folded with the inference rewrites)."""
  num_layers: int = 18

  @nn.compact
  def __call__(self, x: Array) -> list[Array]:
    blocks = RESNET_BLOCKS[self.num_layers]
    bottleneck = self.num_layers > 34
    expansion = 4 if bottleneck else 1
    feats = []
    x = conv_bn(self, x, _conv(64, 7, 2, 3, name="conv1"),
                BatchNorm(name="bn1"))
    x = nn.relu(x)
    feats.append(x)
    x = max_pool_3x3_s2(x)
    inplanes = 64
    for li, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks)):
      for bi in range(n):
        stride = 2 if (li > 0 and bi == 0) else 1
        down = bi == 0 and (stride != 1 or inplanes != planes * expansion)
        block_cls = Bottleneck if bottleneck else BasicBlock
        x = block_cls(planes, stride, down,
                      name=f"layer{li + 1}_{bi}")(x)
        inplanes = planes * expansion
      feats.append(x)
    return feats


class ResnetEncoder(nn.Module):
  """monodepth2's ``ResnetEncoder`` (also the pose encoder with 2 images).

  Attributes:
    num_layers: 18 or 50 (34 also builds).
    num_input_images: images stacked on channels (pose network: 2).

  ``__call__(images (B, H, W, 3 * num_input_images))`` -> list of 5 features
  (see the module docstring). Submodule ``encoder`` (the ResNet trunk).
  """
  num_layers: int = 18
  num_input_images: int = 1

  @property
  def num_ch_enc(self) -> tuple[int, ...]:
    return num_ch_enc(self.num_layers)

  @nn.compact
  def __call__(self, images: Array) -> list[Array]:
    x = (images - MONODEPTH_MEAN) / MONODEPTH_STD
    return ResNetTrunk(self.num_layers, name="encoder")(x)


class Conv3x3(nn.Module):
  """monodepth2's ``Conv3x3``: reflection pad 1 then a 3x3 conv (``conv``)."""
  features: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    return Conv2d(self.features, 3, padding=1, padding_mode="reflect",
                  name="conv")(x)


class ConvBlock(nn.Module):
  """monodepth2's ``ConvBlock``: :class:`Conv3x3` (``conv``) then ELU."""
  features: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    return nn.elu(Conv3x3(self.features, name="conv")(x))


NUM_CH_DEC = (16, 32, 64, 128, 256)


def decoder_layout(scales: Sequence[int]) -> list[tuple]:
  """The official ``nn.ModuleList`` order of the depth decoder.

  Entry ``n`` describes ``decoder.n``: ``('upconv', i, j)`` for i = 4..0,
  j = 0, 1, then ``('dispconv', s)`` for each scale. Checkpoint keys are
  ``decoder.n.conv.conv.*`` (ConvBlock) or ``decoder.n.conv.*`` (dispconv).
  """
  layout = [("upconv", i, j) for i in range(4, -1, -1) for j in (0, 1)]
  layout += [("dispconv", int(s)) for s in scales]
  return layout


class DepthDecoder(nn.Module):
  """monodepth2's ``DepthDecoder`` with skips, nearest x2 upsampling, ELU.

  Attributes:
    num_ch_enc: channels of the encoder features (see :func:`num_ch_enc`).
    scales: scales to predict; ``disp{s}`` has resolution ``H / 2**s``.
    num_output_channels: 1.
    use_skips: concatenate encoder features (official: True).

  ``__call__(features)`` -> ``{'disp{s}': (B, H/2**s, W/2**s, C)}``.
  Submodules ``decoder_N`` in the official ModuleList order
  (:func:`decoder_layout`).
  """
  num_ch_enc: Sequence[int] = (64, 64, 128, 256, 512)
  scales: Sequence[int] = (0, 1, 2, 3)
  num_output_channels: int = 1
  use_skips: bool = True

  @nn.compact
  def __call__(self, features: Sequence[Array]) -> dict[str, Array]:
    index = {entry: n for n, entry in enumerate(decoder_layout(self.scales))}
    outputs = {}
    x = features[-1]
    for i in range(4, -1, -1):
      x = ConvBlock(NUM_CH_DEC[i], name=f"decoder_{index[('upconv', i, 0)]}")(x)
      x = upsample_nearest2(x)
      if self.use_skips and i > 0:
        x = jnp.concatenate([x, features[i - 1]], axis=-1)
      x = ConvBlock(NUM_CH_DEC[i], name=f"decoder_{index[('upconv', i, 1)]}")(x)
      if i in self.scales:
        head = Conv3x3(self.num_output_channels,
                       name=f"decoder_{index[('dispconv', i)]}")
        outputs[f"disp{i}"] = jax.nn.sigmoid(head(x))
    return outputs
