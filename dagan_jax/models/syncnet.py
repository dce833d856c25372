"""SyncNet (Chung & Zisserman, *Out of time: automated lip sync in the wild*,
ACCV 2016 workshops): the network ``S`` of joonson/syncnet_python
(``SyncNetModel.py``), whose released weights ``syncnet_v2.model`` score
LSE-C / LSE-D (:mod:`dagan_jax.evaluation.syncnet`).

Two towers map 0.2 s of speech and of lips to 1024-d embeddings that lie
close when the two are in sync:

* **audio** (``netcnnaud`` + ``netfcaud``): a window of 20 MFCC rows
  (13 coefficients, 10 ms rows: 0.2 s), NHWC ``(N, 13, 20, 1)`` (the
  official NCHW ``(N, 1, 13, 20)``: coefficients along height, time along
  width). Conv 3x3 (64) / BN / ReLU / [1x1 max pool, a no-op], conv 3x3
  (192) / BN / ReLU / max pool 3x3 stride (1, 2), conv 3x3 (384, 256, 256)
  with BN and ReLU, max pool 3x3 stride 2, conv (5, 4) (512) / BN / ReLU:
  ``13x20 -> 11x9 -> 5x4 -> 1x1``; then Linear 512 / BN1d / ReLU / Linear
  1024.
* **lips** (``netcnnlip`` + ``netfclip``): 5 consecutive 224x224 face crops
  (0.2 s at 25 fps), BGR, values in [0, 255] as ``cv2.imread`` gives them,
  ``(N, 5, 224, 224, 3)``. Conv3d (5, 7, 7) stride (1, 2, 2) (96) / BN /
  ReLU / max pool (1, 3, 3) stride 2, conv3d (1, 5, 5) stride 2 padding 1
  (256) / BN / ReLU / max pool 3 stride 2 padding 1, three conv3d (1, 3, 3)
  padding 1 (256) with BN and ReLU, max pool 3 stride 2, conv3d (1, 6, 6)
  (512) / BN / ReLU: ``224 -> 109 -> 54 -> 26 -> 13 -> 6 -> 1``; then the
  same head as the audio's.

The first lip convolution spans all 5 frames, so every later layer sees one
time step: each 3-D convolution here is a 2-D convolution of the frames
stacked along channels (``channel = 3 * frame + colour``; the kernel is
folded the same way when called), through :func:`dagan_jax.models.layers.
conv2d`. BatchNorm is always in eval mode (running statistics): SyncNet is
only ever used frozen here.

Parameter names follow the official state-dict keys with the Sequential
index joined by ``_`` (``netcnnlip.0.weight`` -> ``netcnnlip_0/kernel``);
3-D kernels are stored DHWIO ``(kd, kh, kw, in, out)``, 2-D HWIO, linear
``(in, out)``. 13,631,616 parameters plus the BatchNorm statistics
(audio tower 5,664,704, lip tower 7,966,912).
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dagan_jax.models import layers

Array = jax.Array

#: Frames per lip window, MFCC rows per audio window, crop side in pixels.
WINDOW_FRAMES = 5
WINDOW_ROWS = 20
MFCC_COEFFS = 13
CROP = 224
EMBED_DIM = 1024

#: (index in the official Sequential, out channels, kernel, stride, padding)
#: of every convolution, and (index, kernel, stride, padding) of every max
#: pool, in order. 3-D sizes are (time, height, width).
AUDIO_CONVS = ((0, 64, (3, 3), (1, 1), (1, 1)), (4, 192, (3, 3), (1, 1), (1, 1)),
               (8, 384, (3, 3), (1, 1), (1, 1)), (11, 256, (3, 3), (1, 1), (1, 1)),
               (14, 256, (3, 3), (1, 1), (1, 1)), (18, 512, (5, 4), (1, 1), (0, 0)))
AUDIO_POOLS = {7: ((3, 3), (1, 2), (0, 0)), 17: ((3, 3), (2, 2), (0, 0))}
LIP_CONVS = ((0, 96, (5, 7, 7), (2, 2), (0, 0)), (4, 256, (1, 5, 5), (2, 2), (1, 1)),
             (8, 256, (1, 3, 3), (1, 1), (1, 1)), (11, 256, (1, 3, 3), (1, 1), (1, 1)),
             (14, 256, (1, 3, 3), (1, 1), (1, 1)), (18, 512, (1, 6, 6), (1, 1), (0, 0)))
LIP_POOLS = {3: ((3, 3), (2, 2), (0, 0)), 7: ((3, 3), (2, 2), (1, 1)),
             17: ((3, 3), (2, 2), (0, 0))}


class FoldedConv(nn.Module):
  """A convolution whose input holds ``kd`` time steps stacked along
  channels and whose output has one: ``torch.nn.Conv3d`` with a temporal
  kernel as long as its input (``kd = 1`` is a plain ``Conv2d``).

  Input ``(N, H, W, kd * C)`` (channel ``c`` of step ``t`` at ``t * C + c``);
  parameters ``kernel`` ``(kd, kh, kw, C, features)`` (DHWIO, kd omitted
  when ``len(kernel_size) == 2``) and ``bias``; symmetric zero padding.
  """
  features: int
  kernel_size: Sequence[int]
  stride: Sequence[int] = (1, 1)
  padding: Sequence[int] = (0, 0)
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x: Array) -> Array:
    size = tuple(self.kernel_size)
    kd = size[0] if len(size) == 3 else 1
    c = x.shape[-1] // kd
    shape = size + (c, self.features)
    fan_in = kd * size[-2] * size[-1] * c
    kernel = self.param("kernel", layers.torch_uniform_init(fan_in), shape)
    bias = self.param("bias", layers.torch_uniform_init(fan_in), (self.features,))
    if len(size) == 3:  # (kd, kh, kw, C, F) -> (kh, kw, kd * C, F)
      kernel = jnp.transpose(kernel, (1, 2, 0, 3, 4)).reshape(
          size[1], size[2], kd * c, self.features)
    return layers.conv2d(x, kernel, bias, stride=tuple(self.stride),
                         padding=tuple(self.padding), precision=self.precision)


def _max_pool(x: Array, window, stride, padding) -> Array:
  # Padding counts as -inf, as torch.nn.MaxPool2d/3d pads; floor mode.
  return nn.max_pool(x, tuple(window), strides=tuple(stride),
                     padding=tuple((p, p) for p in padding))


class SyncNet(nn.Module):
  """The official ``S`` (module docstring): :meth:`audio` and :meth:`lips`
  give ``(N, 1024)`` embeddings; ``__call__`` runs both (for ``init``)."""
  embed_dim: int = EMBED_DIM
  precision: Any = jax.lax.Precision.HIGHEST

  def setup(self):
    bn = lambda: layers.BatchNorm(use_running_average=True)  # noqa: E731
    for tower, convs in (("netcnnaud", AUDIO_CONVS), ("netcnnlip", LIP_CONVS)):
      for index, features, kernel, stride, padding in convs:
        setattr(self, f"{tower}_{index}", FoldedConv(
            features, kernel, stride, padding, precision=self.precision))
        setattr(self, f"{tower}_{index + 1}", bn())
    for head in ("netfcaud", "netfclip"):
      setattr(self, f"{head}_0", nn.Dense(512, precision=self.precision))
      setattr(self, f"{head}_1", bn())
      setattr(self, f"{head}_3", nn.Dense(self.embed_dim, precision=self.precision))

  def _tower(self, x: Array, tower: str, convs, pools) -> Array:
    for index, *_ in convs:
      x = nn.relu(getattr(self, f"{tower}_{index + 1}")(
          getattr(self, f"{tower}_{index}")(x)))
      # A pool follows the ReLU at index + 2, i.e. at Sequential index + 3.
      if index + 3 in pools:
        x = _max_pool(x, *pools[index + 3])
    return x.reshape(x.shape[0], -1)

  def _head(self, x: Array, head: str) -> Array:
    x = nn.relu(getattr(self, f"{head}_1")(getattr(self, f"{head}_0")(x)))
    return getattr(self, f"{head}_3")(x)

  def audio(self, mfcc: Array) -> Array:
    """``(N, 13, 20)`` MFCC windows (coefficients x rows) -> ``(N, 1024)``."""
    x = mfcc.astype(jnp.float32)[..., None]
    return self._head(self._tower(x, "netcnnaud", AUDIO_CONVS, AUDIO_POOLS),
                      "netfcaud")

  def lips(self, windows: Array) -> Array:
    """``(N, 5, 224, 224, 3)`` BGR crops in [0, 255] -> ``(N, 1024)``."""
    n, t, h, w, c = windows.shape
    x = jnp.transpose(windows.astype(jnp.float32), (0, 2, 3, 1, 4)).reshape(
        n, h, w, t * c)
    return self._head(self._tower(x, "netcnnlip", LIP_CONVS, LIP_POOLS),
                      "netfclip")

  def __call__(self, mfcc: Array, windows: Array) -> tuple[Array, Array]:
    return self.audio(mfcc), self.lips(windows)


@functools.lru_cache(maxsize=4)
def abstract_variables(module: SyncNet | None = None) -> dict[str, Any]:
  """Shapes of the variables (``jax.eval_shape`` of ``init``, traced once
  per module; read-only)."""
  module = module or SyncNet()
  mfcc = jax.ShapeDtypeStruct((1, MFCC_COEFFS, WINDOW_ROWS), jnp.float32)
  lips = jax.ShapeDtypeStruct((1, WINDOW_FRAMES, CROP, CROP, 3), jnp.float32)
  return jax.eval_shape(module.init, jax.random.PRNGKey(0), mfcc, lips)
