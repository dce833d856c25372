"""Dense motion network (FOMM Sec. 3.2, used unchanged by DaGAN Sec. 3.3).

From source and driving keypoints it builds ``K + 1`` sparse motions (the
identity for the background plus one first-order (affine) motion per
keypoint, FOMM Eq. 4), warps the downsampled source image with each of them
(Eq. 7), and feeds the keypoint heatmap differences (Eq. 6) together with
those deformed sources to an hourglass that predicts

* ``mask``: a softmax over the ``K + 1`` motions per pixel,
* ``deformation``: the mask-weighted sum of the sparse motions (Eq. 8), a
  pull-warp grid of (x, y) in [-1, 1],
* ``occlusion_map``: a sigmoid map in (0, 1) (Sec. 3.2), when
  ``estimate_occlusion_map``.

Everything runs at ``scale_factor`` times the input resolution (0.25: 64x64).
Outputs (NHWC): ``sparse_deformed (B, K+1, h, w, C)``, ``mask (B, h, w, K+1)``
(channel 0 = background), ``deformation (B, h, w, 2)``, ``occlusion_map
(B, h, w, 1)``. Intermediates sown: ``down_out`` (downsampled source),
``hourglass_out``.

The hourglass input has ``(K + 1) * (C + 1)`` channels ordered as the
official ``cat([heatmap, deformed], dim=2).view(B, -1, h, w)``: for motion
``k`` = 0..K, its heatmap then its ``C`` deformed-source channels.
Submodules: ``hourglass``, ``mask``, ``occlusion`` (7x7 convs, padding 3).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from dagan_jax import ops
from dagan_jax.models.layers import Conv2d, Hourglass

Array = jax.Array
KP = dict[str, Array]


class DenseMotionNetwork(nn.Module):
  """FOMM's ``DenseMotionNetwork`` (official constructor arguments)."""
  block_expansion: int
  num_blocks: int
  max_features: int
  num_kp: int
  num_channels: int
  estimate_occlusion_map: bool = False
  scale_factor: float = 1.0
  kp_variance: float = 0.01

  def heatmap_representation(self, spatial_size: tuple[int, int],
                             kp_driving: KP, kp_source: KP) -> Array:
    """FOMM Eq. 6: ``G_driving - G_source`` with a zero background map.

    Returns (B, h, w, K + 1), channel 0 the background.
    """
    g_drv = ops.kp_to_gaussian(kp_driving["value"], spatial_size, self.kp_variance)
    g_src = ops.kp_to_gaussian(kp_source["value"], spatial_size, self.kp_variance)
    heat = g_drv - g_src  # (B, h, w, K)
    zeros = jnp.zeros(heat.shape[:-1] + (1,), heat.dtype)
    return jnp.concatenate([zeros, heat], axis=-1)

  @staticmethod
  def deformed_sources(source: Array, sparse_motion: Array) -> Array:
    """FOMM Eq. 7: the source warped by each motion, (B, K+1, h, w, C)."""
    b, h, w, c = source.shape
    k1 = sparse_motion.shape[1]
    rep = jnp.broadcast_to(source[:, None], (b, k1, h, w, c)).reshape(b * k1, h, w, c)
    grid = sparse_motion.reshape(b * k1, h, w, 2)
    out = ops.grid_sample(rep, grid)
    return out.reshape(b, k1, h, w, c)

  @nn.compact
  def __call__(self, source_image: Array, kp_driving: KP,
               kp_source: KP) -> dict[str, Array]:
    if self.scale_factor != 1:
      source_image = ops.anti_alias_downsample(source_image, self.scale_factor)
    self.sow("intermediates", "down_out", source_image)
    b, h, w, c = source_image.shape
    heat = self.heatmap_representation((h, w), kp_driving, kp_source)
    sparse_motion = ops.sparse_motions(kp_source, kp_driving, (h, w))  # (B,K+1,h,w,2)
    deformed = self.deformed_sources(source_image, sparse_motion)  # (B,K+1,h,w,C)
    out = {"sparse_deformed": deformed}

    x = jnp.concatenate([heat.transpose(0, 3, 1, 2)[..., None], deformed], axis=-1)
    x = x.transpose(0, 2, 3, 1, 4).reshape(b, h, w, -1)  # (B, h, w, (K+1)(C+1))
    hourglass = Hourglass(self.block_expansion, (self.num_kp + 1) * (c + 1),
                          self.num_blocks, self.max_features,
                          name="hourglass")
    prediction = hourglass(x)
    self.sow("intermediates", "hourglass_out", prediction)

    mask = Conv2d(self.num_kp + 1, 7, padding=3, name="mask")(prediction)
    mask = jax.nn.softmax(mask, axis=-1)  # (B, h, w, K+1)
    out["mask"] = mask
    # Eq. 8: sum_k mask_k * motion_k
    out["deformation"] = jnp.einsum("bhwk,bkhwn->bhwn", mask, sparse_motion,
                                    precision=jax.lax.Precision.HIGHEST)
    if self.estimate_occlusion_map:
      occ = Conv2d(1, 7, padding=3, name="occlusion")(prediction)
      out["occlusion_map"] = jax.nn.sigmoid(occ)
    return out
