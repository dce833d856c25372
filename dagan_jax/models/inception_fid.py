"""InceptionV3 in the variant FID is computed with (pool3 features).

FID (Heusel et al., NeurIPS 2017) compares the 2048-d outputs of the final
average pool of TensorFlow's 2015 Inception graph. pytorch-fid
(mseitzer/pytorch-fid) ported that graph to PyTorch as torchvision's
``Inception3(num_classes=1008, aux_logits=False)`` with four kinds of patched
blocks; this module is that network, up to the pool:

* ``Mixed_5b..5d`` (``FIDInceptionA``), ``Mixed_6b..6e``
  (``FIDInceptionC``) and ``Mixed_7b`` (``FIDInceptionE_1``) average-pool
  their pool branch over the valid pixels only (``count_include_pad=False``,
  as TensorFlow's average pool does);
* ``Mixed_7c`` (``FIDInceptionE_2``) max-pools its pool branch instead
  (a quirk of the TF graph that the FID numbers depend on);
* ``Mixed_6a`` / ``Mixed_7a`` are torchvision's ``InceptionB`` / ``InceptionD``.

Every convolution is ``BasicConv2d``: a bias-free conv, eval-mode BatchNorm
with eps 0.001, ReLU. Input: NHWC, already resized to 299x299 and scaled to
[-1, 1] (:mod:`dagan_jax.evaluation.fid` does both as pytorch-fid does).
Output: ``(N, 2048)``, the spatial mean of ``Mixed_7c``'s 8x8 map (channels in
torch's concatenation order).

Parameter names are pytorch-fid's state-dict keys (``Mixed_6b.branch7x7_2.
conv.weight`` -> ``Mixed_6b/branch7x7_2/conv/kernel``, ``...bn.running_var``
-> ``batch_stats/.../bn/var``), so the weights file converts by the generic
rules of :mod:`dagan_jax.convert.torch_to_flax`
(:mod:`dagan_jax.convert.inception_fid`). The classifier ``fc`` is not part of
the network: FID never uses it.
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dagan_jax.models import layers

Array = jax.Array

#: Side of the square input the network was trained at.
INPUT_SIZE = 299
#: Width of the pool3 features.
FEATURE_DIM = 2048
#: BatchNorm epsilon of every ``BasicConv2d`` (torchvision's Inception).
BN_EPS = 1e-3


class BasicConv2d(nn.Module):
  """conv (no bias) -> BatchNorm(eps 0.001) -> ReLU; submodules ``conv``,
  ``bn`` as in torchvision. Eval mode unless ``batch_stats`` is mutable."""
  features: int
  kernel_size: int | tuple[int, int]
  stride: int = 1
  padding: int | tuple[int, int] = 0
  precision: jax.lax.Precision | None = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    conv = layers.Conv2d(self.features, self.kernel_size, stride=self.stride,
                         padding=self.padding, use_bias=False,
                         precision=self.precision, name="conv")
    bn = layers.BatchNorm(epsilon=BN_EPS, name="bn")
    # conv_bn folds the BatchNorm into the conv under the inference rewrites.
    return nn.relu(layers.conv_bn(self, x, conv, bn))


def _max_pool(x: Array, stride: int, padding: int = 0) -> Array:
  """``F.max_pool2d(x, 3, stride, padding)``: padded cells never win."""
  return nn.max_pool(x, (3, 3), strides=(stride, stride),
                     padding=((padding, padding), (padding, padding)))


def _avg_pool_valid(x: Array) -> Array:
  """``F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)``: each window's
  mean over its pixels inside the image (4, 6 or 9 of them)."""
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                     count_include_pad=False)


def _convs(module: nn.Module, x: Array,
           chain: Sequence[tuple[str, int, int | tuple[int, int],
                                 int | tuple[int, int], int]],
           precision) -> Array:
  """Applies named ``BasicConv2d`` in sequence: (name, out, kernel, padding,
  stride) each."""
  for name, out, kernel, padding, stride in chain:
    x = BasicConv2d(out, kernel, stride=stride, padding=padding,
                    precision=precision, name=name, parent=module)(x)
  return x


class InceptionA(nn.Module):
  """``FIDInceptionA``: 1x1 | 5x5 | double 3x3 | valid-average pool + 1x1."""
  pool_features: int
  precision: jax.lax.Precision | None = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    p = self.precision
    return jnp.concatenate([
        _convs(self, x, [("branch1x1", 64, 1, 0, 1)], p),
        _convs(self, x, [("branch5x5_1", 48, 1, 0, 1),
                         ("branch5x5_2", 64, 5, 2, 1)], p),
        _convs(self, x, [("branch3x3dbl_1", 64, 1, 0, 1),
                         ("branch3x3dbl_2", 96, 3, 1, 1),
                         ("branch3x3dbl_3", 96, 3, 1, 1)], p),
        _convs(self, _avg_pool_valid(x),
               [("branch_pool", self.pool_features, 1, 0, 1)], p),
    ], axis=-1)


class InceptionB(nn.Module):
  """torchvision ``InceptionB`` (grid reduction 35 -> 17)."""
  precision: jax.lax.Precision | None = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    p = self.precision
    return jnp.concatenate([
        _convs(self, x, [("branch3x3", 384, 3, 0, 2)], p),
        _convs(self, x, [("branch3x3dbl_1", 64, 1, 0, 1),
                         ("branch3x3dbl_2", 96, 3, 1, 1),
                         ("branch3x3dbl_3", 96, 3, 0, 2)], p),
        _max_pool(x, 2),
    ], axis=-1)


class InceptionC(nn.Module):
  """``FIDInceptionC``: factorised 7x7 branches, valid-average pool."""
  channels_7x7: int
  precision: jax.lax.Precision | None = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    p, c7 = self.precision, self.channels_7x7
    row, col = ((1, 7), (0, 3)), ((7, 1), (3, 0))  # (kernel, padding)
    return jnp.concatenate([
        _convs(self, x, [("branch1x1", 192, 1, 0, 1)], p),
        _convs(self, x, [("branch7x7_1", c7, 1, 0, 1),
                         ("branch7x7_2", c7, *row, 1),
                         ("branch7x7_3", 192, *col, 1)], p),
        _convs(self, x, [("branch7x7dbl_1", c7, 1, 0, 1),
                         ("branch7x7dbl_2", c7, *col, 1),
                         ("branch7x7dbl_3", c7, *row, 1),
                         ("branch7x7dbl_4", c7, *col, 1),
                         ("branch7x7dbl_5", 192, *row, 1)], p),
        _convs(self, _avg_pool_valid(x), [("branch_pool", 192, 1, 0, 1)], p),
    ], axis=-1)


class InceptionD(nn.Module):
  """torchvision ``InceptionD`` (grid reduction 17 -> 8)."""
  precision: jax.lax.Precision | None = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    p = self.precision
    return jnp.concatenate([
        _convs(self, x, [("branch3x3_1", 192, 1, 0, 1),
                         ("branch3x3_2", 320, 3, 0, 2)], p),
        _convs(self, x, [("branch7x7x3_1", 192, 1, 0, 1),
                         ("branch7x7x3_2", 192, (1, 7), (0, 3), 1),
                         ("branch7x7x3_3", 192, (7, 1), (3, 0), 1),
                         ("branch7x7x3_4", 192, 3, 0, 2)], p),
        _max_pool(x, 2),
    ], axis=-1)


class InceptionE(nn.Module):
  """``FIDInceptionE_1`` (``pool='avg'``: valid-average pool) or
  ``FIDInceptionE_2`` (``pool='max'``: 3x3 max pool, stride 1, padding 1)."""
  pool: str
  precision: jax.lax.Precision | None = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    if self.pool not in ("avg", "max"):
      raise ValueError(f"InceptionE: pool must be 'avg' or 'max', got {self.pool!r}")
    p = self.precision
    one_by_three, three_by_one = ((1, 3), (0, 1)), ((3, 1), (1, 0))
    b3 = _convs(self, x, [("branch3x3_1", 384, 1, 0, 1)], p)
    b3dbl = _convs(self, x, [("branch3x3dbl_1", 448, 1, 0, 1),
                             ("branch3x3dbl_2", 384, 3, 1, 1)], p)
    pooled = _avg_pool_valid(x) if self.pool == "avg" else _max_pool(x, 1, 1)
    return jnp.concatenate([
        _convs(self, x, [("branch1x1", 320, 1, 0, 1)], p),
        _convs(self, b3, [("branch3x3_2a", 384, *one_by_three, 1)], p),
        _convs(self, b3, [("branch3x3_2b", 384, *three_by_one, 1)], p),
        _convs(self, b3dbl, [("branch3x3dbl_3a", 384, *one_by_three, 1)], p),
        _convs(self, b3dbl, [("branch3x3dbl_3b", 384, *three_by_one, 1)], p),
        _convs(self, pooled, [("branch_pool", 192, 1, 0, 1)], p),
    ], axis=-1)


class FIDInceptionV3(nn.Module):
  """pytorch-fid's ``fid_inception_v3`` up to the pool3 features.

  ``__call__(x)``: ``x`` ``(N, 299, 299, 3)`` in [-1, 1] -> ``(N, 2048)``.
  ``precision`` goes to every convolution (``HIGHEST`` keeps float32
  convolutions float32 on accelerators that would use TF32 by default).
  """
  precision: jax.lax.Precision | None = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    p = self.precision
    x = _convs(self, x, [("Conv2d_1a_3x3", 32, 3, 0, 2),
                         ("Conv2d_2a_3x3", 32, 3, 0, 1),
                         ("Conv2d_2b_3x3", 64, 3, 1, 1)], p)
    x = _max_pool(x, 2)
    x = _convs(self, x, [("Conv2d_3b_1x1", 80, 1, 0, 1),
                         ("Conv2d_4a_3x3", 192, 3, 0, 1)], p)
    x = _max_pool(x, 2)
    for name, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64),
                                ("Mixed_5d", 64)):
      x = InceptionA(pool_features, p, name=name)(x)
    x = InceptionB(p, name="Mixed_6a")(x)
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160),
                     ("Mixed_6e", 192)):
      x = InceptionC(c7, p, name=name)(x)
    x = InceptionD(p, name="Mixed_7a")(x)
    x = InceptionE("avg", p, name="Mixed_7b")(x)
    x = InceptionE("max", p, name="Mixed_7c")(x)
    return jnp.mean(x, axis=(1, 2))  # AdaptiveAvgPool2d(1), flattened


@functools.lru_cache(maxsize=None)
def abstract_variables(precision: jax.lax.Precision | None = None) -> dict:
  """The network's variables as shapes (``params``, ``batch_stats``); traced
  once per precision (seconds: 94 convolutions), treat as read-only."""
  model = FIDInceptionV3(precision)
  x = jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
  return jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
