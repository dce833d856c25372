"""pix2pixHD's multi-scale PatchGAN discriminator as IP_LAP trains its
renderer with it (``models/pix2pixHD_disc.py``: ``define_D`` ->
``MultiscaleDiscriminator`` of ``NLayerDiscriminator`` s with
``getIntermFeat=True``; Wang et al., "High-Resolution Image Synthesis and
Semantic Manipulation with Conditional GANs", CVPR 2018, Sec. 3.2).

Each scale is a PatchGAN of ``n_layers + 2`` stages, kernel 4, padding 2:

* stage 0: conv (``ndf``, stride 2) -> LeakyReLU(0.2);
* stages 1 .. n_layers-1: conv (``min(2 * prev, 512)``, stride 2) ->
  InstanceNorm (no affine, eps 1e-5) -> LeakyReLU(0.2);
* stage n_layers: the same with stride 1;
* stage n_layers+1: conv to 1 channel, stride 1 (the patch logits).

Scale ``i`` (0 = full resolution) sees the input average-pooled ``i`` times
by ``AvgPool2d(3, stride 2, padding 1, count_include_pad=False)``.

Conventions:

* NHWC in and out. ``__call__(x (B, H, W, C))`` returns a list over scales
  (0 = full resolution) of lists of the ``n_layers + 2`` stage outputs (the
  first ``n_layers + 1`` are the feature-matching features, the last the
  patch prediction), as the official ``forward`` returns.
* **Official naming quirk kept**: scale ``i`` of the output is computed by
  the weights named ``scale{num_D - 1 - i}_layer{j}`` (the official forward
  walks its discriminators in reverse), so the full-resolution output comes
  from ``scale{num_D-1}_*``. Submodules are ``scale{s}_layer{j}_0`` (the
  conv of the official Sequential ``scale{s}_layer{j}``, index 0).
* Only IP_LAP's configuration is built: ``getIntermFeat=True`` and
  ``norm='instance'`` (no parameters in the norms). ``use_sigmoid`` has no
  effect in the official code with ``getIntermFeat=True`` (the Sigmoid stage
  is built but never run), so it is not offered.
* Convs are initialised N(0, 0.02) as ``weights_init``; biases by torch's
  default. The discriminator is colour-agnostic; with IP_LAP's weights it
  judges **BGR** faces like the renderer produces.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dagan_jax.models.layers import Conv2d, InstanceNorm

Array = jax.Array


def stage_channels(ndf: int, n_layers: int) -> list[int]:
  """Output channels of the ``n_layers + 2`` stages of one scale."""
  chans, nf = [ndf], ndf
  for _ in range(1, n_layers):
    nf = min(nf * 2, 512)
    chans.append(nf)
  chans.append(min(nf * 2, 512))
  chans.append(1)
  return chans


def avg_pool3_s2(x: Array) -> Array:
  """``nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)`` on
  NHWC: the mean of the in-image pixels of each 3x3 window (window centres
  at even pixels), as nine strided slices of the zero-padded input."""
  _, h, w, _ = x.shape
  oh, ow = (h - 1) // 2 + 1, (w - 1) // 2 + 1
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  total = None
  for di in range(3):
    for dj in range(3):
      term = xp[:, di:di + 2 * oh - 1:2, dj:dj + 2 * ow - 1:2]
      total = term if total is None else total + term
  ones = np.pad(np.ones((h, w), np.float32), 1)
  count = sum(ones[di:di + 2 * oh - 1:2, dj:dj + 2 * ow - 1:2]
              for di in range(3) for dj in range(3))
  return total / jnp.asarray(count, x.dtype)[None, :, :, None]


class MultiscaleDiscriminator(nn.Module):
  """pix2pixHD's ``MultiscaleDiscriminator`` (getIntermFeat, instance norm).

  Attributes:
    ndf: channels of the first stage (64 officially).
    n_layers: strided stages (``n_layers_D``, 3 officially).
    num_D: number of scales (2 officially).
  """
  ndf: int = 64
  n_layers: int = 3
  num_D: int = 2  # noqa: N815 (the official argument name)

  @nn.compact
  def __call__(self, x: Array) -> list[list[Array]]:
    chans = stage_channels(self.ndf, self.n_layers)
    init = nn.initializers.normal(0.02)
    results = []
    for i in range(self.num_D):
      s = self.num_D - 1 - i
      feats, h = [], x
      for j, c in enumerate(chans):
        stride = 2 if j < self.n_layers else 1
        h = Conv2d(c, 4, stride=stride, padding=2, kernel_init=init,
                   name=f"scale{s}_layer{j}_0")(h)
        if 0 < j <= self.n_layers:
          h = InstanceNorm()(h)
        if j <= self.n_layers:
          h = jnp.where(h >= 0, h, 0.2 * h)
        feats.append(h)
      results.append(feats)
      if i != self.num_D - 1:
        x = avg_pool3_s2(x)
    return results
