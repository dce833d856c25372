"""Keypoint detector on RGB + depth (DaGAN Sec. 3.2, FOMM Sec. 3).

DaGAN's detector is FOMM's ``KPDetector`` fed with the image and its depth
map stacked on channels (``RGBD``, 4 channels; official ``--rgbd``): the
input is anti-alias downsampled (``scale_factor``, 0.25 -> 64x64), an
:class:`~dagan_jax.models.layers.Hourglass` extracts features, a 7x7 conv
(no padding) gives one heatmap logit map per keypoint, and

* ``value`` = the expectation of the coordinate grid under the spatial
  softmax of ``logits / temperature`` (FOMM Eq. 6);
* ``jacobian`` = the heatmap-weighted sum of a 4-channel map per keypoint
  (FOMM Sec. 3.1, the local affine transformation), when
  ``estimate_jacobian``.

Input NHWC ``(B, H, W, num_channels)``; outputs ``value (B, K, 2)`` as (x, y)
in [-1, 1] and ``jacobian (B, K, 2, 2)``. Intermediates sown (collection
``'intermediates'``): ``down_out`` (the downsampled input), ``predictor_out``
(hourglass output), ``kp_logits`` ``(B, h, w, K)`` and ``jacobian_map``
``(B, h, w, 4 * J)`` with channel ``4 * j + c`` = entry ``c`` of map ``j``
(row-major 2x2), as the official NCHW channel order.

Submodules: ``predictor`` (Hourglass), ``kp`` and ``jacobian`` (7x7 convs).
The official anti-alias kernel buffer ``down.weight`` holds no parameters:
it is recomputed (:func:`dagan_jax.ops.anti_alias_downsample`).

Caveat (XLA:CPU in jax 0.10.2): a convolution whose kernel is an all-zero
*compile-time constant* followed by a reduction returns garbage. The
official init of the ``jacobian`` head is exactly that (zero kernel), so
pass freshly initialised variables to ``jax.jit`` as arguments rather than
closing over them (trained weights are not affected).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from dagan_jax import ops
from dagan_jax.models.layers import Conv2d, Hourglass

Array = jax.Array


def _jacobian_bias_init(num_maps: int):
  """The official init of the Jacobian head: weight 0, bias identity."""
  def init(key, shape, dtype=jnp.float32):
    del key
    return jnp.tile(jnp.asarray([1.0, 0.0, 0.0, 1.0], dtype), num_maps).reshape(shape)
  return init


class KPDetector(nn.Module):
  """FOMM / DaGAN keypoint detector.

  Attributes (the official constructor's): ``block_expansion``, ``num_kp``,
  ``num_channels`` (4 for RGB + depth), ``max_features``, ``num_blocks``,
  ``temperature``, ``estimate_jacobian``, ``scale_factor``,
  ``single_jacobian_map``, ``pad`` (padding of the 7x7 heads, official 0).
  """
  block_expansion: int
  num_kp: int
  num_channels: int
  max_features: int
  num_blocks: int
  temperature: float
  estimate_jacobian: bool = False
  scale_factor: float = 1.0
  single_jacobian_map: bool = False
  pad: int = 0

  @nn.compact
  def __call__(self, x: Array) -> dict[str, Array]:
    if x.shape[-1] != self.num_channels:
      raise ValueError(f"KPDetector expects {self.num_channels} input channels "
                       f"(NHWC), got shape {x.shape}")
    if self.scale_factor != 1:
      x = ops.anti_alias_downsample(x, self.scale_factor)
    self.sow("intermediates", "down_out", x)
    predictor = Hourglass(self.block_expansion, self.num_channels,
                          self.num_blocks, self.max_features,
                          name="predictor")
    feature_map = predictor(x)
    self.sow("intermediates", "predictor_out", feature_map)
    logits = Conv2d(self.num_kp, 7, padding=self.pad, name="kp")(feature_map)
    self.sow("intermediates", "kp_logits", logits)
    value, heatmap = ops.heatmap_to_keypoints(logits, self.temperature)
    out = {"value": value}
    if self.estimate_jacobian:
      num_maps = 1 if self.single_jacobian_map else self.num_kp
      jacobian_map = Conv2d(4 * num_maps, 7, padding=self.pad,
                            kernel_init=nn.initializers.zeros,
                            bias_init=_jacobian_bias_init(num_maps),
                            name="jacobian")(feature_map)
      self.sow("intermediates", "jacobian_map", jacobian_map)
      out["jacobian"] = ops.jacobian_from_maps(heatmap, jacobian_map)
    return out
