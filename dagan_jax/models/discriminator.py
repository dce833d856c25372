"""Multi-scale patch discriminator (FOMM Sec. 3.4 / Pix2Pix, as in DaGAN).

Each scale's :class:`Discriminator` sees the image at that scale of the
anti-aliased pyramid, concatenated (when ``use_kp``) with the Gaussian
heatmaps of the driving keypoints (variance ``kp_variance``), and applies
``num_blocks`` blocks of 4x4 conv (no padding) -> InstanceNorm(affine; not
on the first block) -> LeakyReLU(0.2) -> 2x2 average pool (not on the last
block), then a 1x1 conv to a one-channel prediction map (LSGAN).

Input: a dict ``{'prediction_<scale>': (B, H_s, W_s, C)}`` and keypoints.
Output: ``{'feature_maps_<scale>': [num_blocks maps (B, h, w, c)],
'prediction_map_<scale>': (B, h, w, 1)}`` with ``<scale>`` written as
``str(scale)`` (``'1'``, ``'0.5'``). Submodules ``discs_<key>`` with
``<key> = str(scale).replace('.', '-')`` (the official ModuleDict keys), each
holding ``down_blocks_i/conv``, ``down_blocks_i/norm`` and ``conv``.
With ``sn`` the convs are spectral-normalised (:class:`~dagan_jax.models.layers.SNConv2d`).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dagan_jax import ops
from dagan_jax.models.layers import InstanceNorm, avg_pool2, make_conv

Array = jax.Array


def scale_key(scale: float | int) -> str:
  """The official ModuleDict key of a scale: ``str(scale)`` with '.' -> '-'."""
  return str(scale).replace(".", "-")


class DownBlock2d(nn.Module):
  """Discriminator block: conv (``conv``) [-> InstanceNorm (``norm``)] ->
  LeakyReLU 0.2 [-> 2x2 average pool]."""
  features: int
  norm: bool = False
  kernel_size: int = 4
  pool: bool = False
  sn: bool = False

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = make_conv(self.sn, features=self.features, kernel_size=self.kernel_size,
                  name="conv")(x)
    if self.norm:
      x = InstanceNorm(use_scale=True, use_bias=True, name="norm")(x)
    x = nn.leaky_relu(x, 0.2)
    if self.pool:
      x = avg_pool2(x)
    return x


class Discriminator(nn.Module):
  """One scale of the discriminator (official constructor arguments)."""
  num_channels: int = 3
  block_expansion: int = 64
  num_blocks: int = 4
  max_features: int = 512
  sn: bool = False
  use_kp: bool = False
  num_kp: int = 10
  kp_variance: float = 0.01

  @nn.compact
  def __call__(self, x: Array, kp: dict[str, Array] | None = None
               ) -> tuple[list[Array], Array]:
    out = x
    if self.use_kp:
      heat = ops.kp_to_gaussian(kp["value"], x.shape[1:3], self.kp_variance)
      out = jnp.concatenate([out, heat.astype(out.dtype)], axis=-1)
    feature_maps = []
    for i in range(self.num_blocks):
      out = DownBlock2d(min(self.max_features, self.block_expansion * (2 ** (i + 1))),
                        norm=(i != 0), kernel_size=4,
                        pool=(i != self.num_blocks - 1), sn=self.sn,
                        name=f"down_blocks_{i}")(out)
      feature_maps.append(out)
    prediction_map = make_conv(self.sn, features=1, kernel_size=1, name="conv")(out)
    return feature_maps, prediction_map


class MultiScaleDiscriminator(nn.Module):
  """One :class:`Discriminator` per scale (``discs_<key>``)."""
  scales: Sequence[float] = (1,)
  num_channels: int = 3
  block_expansion: int = 64
  num_blocks: int = 4
  max_features: int = 512
  sn: bool = False
  use_kp: bool = False
  num_kp: int = 10
  kp_variance: float = 0.01

  @nn.compact
  def __call__(self, x: dict[str, Array], kp: dict[str, Array] | None = None
               ) -> dict[str, Array | list[Array]]:
    out = {}
    for scale in self.scales:
      disc = Discriminator(self.num_channels, self.block_expansion,
                           self.num_blocks, self.max_features, self.sn,
                           self.use_kp, self.num_kp, self.kp_variance,
                           name=f"discs_{scale_key(scale)}")
      s = str(scale)
      feature_maps, prediction_map = disc(x["prediction_" + s], kp)
      out["feature_maps_" + s] = feature_maps
      out["prediction_map_" + s] = prediction_map
    return out
