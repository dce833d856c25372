"""Audio2Head's head-pose predictor (``audio2poseLSTM``), as a Flax module.

Audio2Head (Wang et al., "Audio2Head: Audio-driven One-shot Talking-head
Generation with Natural Head Motion", IJCAI 2021, Sec. 3.1) first predicts a
6-DoF head pose per video frame from speech and the identity image; the
poses are drawn as boxes (:mod:`dagan_jax.face.pose_boxes`) that condition
the keypoint predictor. This module follows the released code
(wangsuzhen/Audio2Head ``modules/audio2pose.py``), which is what the
checkpoint was trained with:

* ``em_img``: a torchvision-style ResNet-34 (``resnet``: conv 7x7/2,
  BatchNorm, ReLU, max-pool 3x3/2, layers [3, 4, 6, 3] of basic blocks,
  global average pool, ``fc`` 512 -> 256) on the image, as it is: RGB in
  [0, 1], no mean/std normalisation.
* ``em_audio``: a second ResNet-34 with one input channel on each frame's
  block of 4 feature rows x 41 features, a one-channel image of height 4
  (the 10 ms feature frames) and width 41 (the features). After the stem it
  is (1, 11), after ``layer4`` (1, 2).
* ``lstm``: a 2-layer LSTM of 256 units started from zero states, stepped
  once per video frame. Its input at step ``t`` is
  ``[audio_embedding_t, previous]`` (512 = 256 + 256), where ``previous`` is
  the image embedding at ``t = 0`` and the top layer's output of step
  ``t - 1`` afterwards: the official loop feeds its own output back in
  place of the image embedding. The paper does not describe this; the code
  is followed because the checkpoint depends on it.
* ``output``: Linear 256 -> 6 on the image embedding (row 0) and on each
  LSTM output (rows 1..T): ``T + 1`` normalised poses, no activation. Row 0
  belongs to the image alone; the official pipeline shows row ``t`` with
  video frame ``t`` (a one-frame lag) and row ``T`` only in padding.

:func:`denormalize_pose` maps a normalised pose to the official units with
the constants of the official ``get_pose_from_audio``
(:data:`POSE_MIN`, :data:`POSE_MAX`): ``(p + 1) / 2 * (max - min) + min``,
float32 as there; columns 0-2 are the rotation (axis-angle radians, an
OpenCV ``rvec``), 3-5 the translation, in the camera of
:mod:`dagan_jax.face.pose`.

Conventions:

* Inputs NHWC: ``image`` (B, H, W, 3) in [0, 1] (256 x 256 in the official
  pipeline), ``audio`` (B, T, 4, 41) float32 (:func:`audio_blocks`).
* Output ``(B, T + 1, 6)`` normalised poses.
* BatchNorm follows :mod:`dagan_jax.models.layers`: eval mode (running
  statistics) unless ``batch_stats`` is mutable.
* Intermediates: called with ``with_intermediates=True`` the module also
  returns a dict under the parity fixture's names (NHWC; the audio
  ResNet's maps keep the frames flattened into the batch, as the official
  code does; not sown, as ``em_img`` would clash with the submodule's
  name):
  ``em_img.layer4`` (B, 8, 8, 512), ``em_img`` (B, 256), ``em_audio.maxpool``
  (B*T, 1, 11, 64), ``em_audio.layer4`` (B*T, 1, 2, 512), ``em_audio``
  (B, T, 256), ``lstm_out`` (B, T, 256), ``poses_norm`` (B, T + 1, 6).
* Names follow the official attribute paths (``em_audio/resnet/layer1_0/
  conv1``, ``lstm``, ``output``), so :mod:`dagan_jax.convert.audio2pose`
  converts a checkpoint by renaming and transposing. The LSTM keeps
  PyTorch's gate order (i, f, g, o) along the 4H axis of its kernels
  (``kernel_ih_l{k}`` (in, 4H) = ``weight_ih_l{k}``ᵀ) and both of its biases.
* The recurrence is one ``jax.lax.scan`` over T: any length compiles once
  per shape.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dagan_jax import compute
from dagan_jax.models.depth import (BasicBlock, _conv, max_pool_3x3_s2)
from dagan_jax.models.layers import BatchNorm, conv_bn, torch_uniform_init

Array = jax.Array

#: Lower / upper ends of the normalised pose range, per column
#: (rx, ry, rz in radians; tx, ty, tz in the box's units), as the official
#: ``get_pose_from_audio`` states them (float32).
POSE_MIN = np.array([-0.639, -0.501, -0.47, -102.6, -32.5, 184.6], np.float32)
POSE_MAX = np.array([0.411, 0.547, 0.433, 159.1, 116.5, 376.5], np.float32)

#: Feature rows (10 ms frames) per video frame (25 fps) and features per row.
ROWS_PER_FRAME = 4
NUM_FEATURES = 41

RESNET34_BLOCKS = (3, 4, 6, 3)


def audio_blocks(features: np.ndarray) -> np.ndarray:
  """(n, 41) speech features -> (T, 4, 41) float32, ``T = n // 4``: block
  ``k`` holds rows ``4k .. 4k + 3`` (a trailing partial block is dropped,
  as the official code does)."""
  features = np.asarray(features)
  t = len(features) // ROWS_PER_FRAME
  return np.asarray(features[:t * ROWS_PER_FRAME], np.float32).reshape(
      t, ROWS_PER_FRAME, features.shape[-1])


def denormalize_pose(poses_norm: Any) -> tuple[Any, Any]:
  """Normalised poses (..., 6) -> (rotation (..., 3), translation (..., 3)).

  ``(p + 1) / 2 * (max - min) + min`` in float32 with the official order of
  operations; works on numpy and jax arrays alike (numpy in, numpy out).
  """
  xp = jnp if isinstance(poses_norm, jax.Array) else np
  p = xp.asarray(poses_norm, np.float32)
  span = POSE_MAX - POSE_MIN
  poses = (p + np.float32(1)) / np.float32(2) * span + POSE_MIN
  return poses[..., :3], poses[..., 3:]


class Linear(nn.Module):
  """``torch.nn.Linear`` over the last axis: ``x @ kernel + bias`` with
  ``kernel`` (in, out) = PyTorch's ``weight``ᵀ; PyTorch's default init."""
  features: int
  use_bias: bool = True
  precision: Any = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    fan_in = x.shape[-1]
    kernel = self.param("kernel", torch_uniform_init(fan_in),
                        (fan_in, self.features))
    y = jnp.dot(x, kernel.astype(x.dtype), precision=self.precision)
    if self.use_bias:
      y = y + self.param("bias", torch_uniform_init(fan_in),
                         (self.features,)).astype(x.dtype)
    return y


class ResNet(nn.Module):
  """The official ``modules/resnet.py`` ResNet with basic blocks: stem
  (``conv1`` 7x7/2 without bias, ``bn1``, ReLU, max-pool 3x3/2 pad 1),
  ``layer1..4`` (64, 128, 256, 512 planes; stride 2 from ``layer2`` on),
  global average pool, ``fc``. The input channel count is the input's.

  Returns ``(embedding (B, num_classes), {'maxpool': stem output,
  'layer4': layer4 output})`` (NHWC maps)."""
  num_classes: int = 256
  blocks: Sequence[int] = RESNET34_BLOCKS

  @nn.compact
  def __call__(self, x: Array) -> tuple[Array, dict[str, Array]]:
    x = nn.relu(conv_bn(self, x, _conv(64, 7, 2, 3, name="conv1"),
                        BatchNorm(name="bn1")))
    x = max_pool_3x3_s2(x)
    feats = {"maxpool": x}
    inplanes = 64
    for li, (planes, n) in enumerate(zip((64, 128, 256, 512), self.blocks)):
      for bi in range(n):
        stride = 2 if (li > 0 and bi == 0) else 1
        down = bi == 0 and (stride != 1 or inplanes != planes)
        x = BasicBlock(planes, stride, down, name=f"layer{li + 1}_{bi}")(x)
        inplanes = planes
    feats["layer4"] = x
    pooled = compute.block_mean(x, 1, 3)  # AdaptiveAvgPool2d((1, 1)) + flatten
    return Linear(self.num_classes, name="fc")(pooled), feats


class ResNetEmbedding(nn.Module):
  """The official ``MyResNet34``: a wrapper whose only child is ``resnet``
  (kept so that the parameter paths match the checkpoint's)."""
  embedding_dim: int = 256
  blocks: Sequence[int] = RESNET34_BLOCKS

  @nn.compact
  def __call__(self, x: Array) -> tuple[Array, dict[str, Array]]:
    return ResNet(self.embedding_dim, tuple(self.blocks), name="resnet")(x)


def lstm_cell(params: dict[str, Array], layer: int, x: Array, h: Array,
              c: Array, precision: Any = None) -> tuple[Array, Array]:
  """One step of PyTorch's LSTM layer ``layer``: gates ``(h W_hh + b_hh) +
  (x W_ih + b_ih)`` split as (i, f, g, o); ``c' = f c + i g``,
  ``h' = o tanh(c')``. Returns ``(h', c')``."""
  k = f"_l{layer}"
  gates = (jnp.dot(h, params["kernel_hh" + k], precision=precision)
           + params["bias_hh" + k])
  gates = gates + (jnp.dot(x, params["kernel_ih" + k], precision=precision)
                   + params["bias_ih" + k])
  i, f, g, o = jnp.split(gates, 4, axis=-1)
  c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
  h = jax.nn.sigmoid(o) * jnp.tanh(c)
  return h, c


class FeedbackLSTM(nn.Module):
  """``nn.LSTM(input_size, hidden_size, num_layers, batch_first=True)``
  stepped as the official audio2pose loop does: the input at step ``t`` is
  ``[x_t, y_{t-1}]`` with ``y`` the top layer's output and ``y_{-1} =
  first`` (the image embedding); the states start at zero.

  Params (PyTorch's, transposed; gate order (i, f, g, o) along 4H):
  ``kernel_ih_l{k}`` (in_k, 4H), ``kernel_hh_l{k}`` (H, 4H),
  ``bias_ih_l{k}``, ``bias_hh_l{k}`` (4H,), with ``in_0 = x's width + H``
  and ``in_k = H`` above.

  Call: ``(xs (B, T, A), first (B, H)) -> outputs (B, T, H)``.
  """
  hidden_size: int = 256
  num_layers: int = 2
  precision: Any = None

  @nn.compact
  def __call__(self, xs: Array, first: Array) -> Array:
    hsz = self.hidden_size
    if first.shape[-1] != hsz:
      raise ValueError(f"FeedbackLSTM: the fed-back input has width "
                       f"{first.shape[-1]}, the LSTM {hsz} units")
    bound = 1.0 / np.sqrt(hsz)  # PyTorch: every LSTM weight ~ U(-1/sqrt(H), 1/sqrt(H))
    init = lambda key, shape, dtype=jnp.float32: jax.random.uniform(  # noqa: E731
        key, shape, dtype, -bound, bound)
    params = {}
    for layer in range(self.num_layers):
      width = xs.shape[-1] + hsz if layer == 0 else hsz
      k = f"_l{layer}"
      params["kernel_ih" + k] = self.param("kernel_ih" + k, init, (width, 4 * hsz))
      params["kernel_hh" + k] = self.param("kernel_hh" + k, init, (hsz, 4 * hsz))
      params["bias_ih" + k] = self.param("bias_ih" + k, init, (4 * hsz,))
      params["bias_hh" + k] = self.param("bias_hh" + k, init, (4 * hsz,))
    params = jax.tree_util.tree_map(lambda p: p.astype(xs.dtype), params)
    b = xs.shape[0]
    zeros = jnp.zeros((self.num_layers, b, hsz), xs.dtype)

    def step(carry, x_t):
      prev, hs, cs = carry
      inp = jnp.concatenate([x_t, prev], axis=-1)
      new_h, new_c = [], []
      for layer in range(self.num_layers):
        h, c = lstm_cell(params, layer, inp, hs[layer], cs[layer],
                         self.precision)
        new_h.append(h)
        new_c.append(c)
        inp = h
      return (inp, jnp.stack(new_h), jnp.stack(new_c)), inp

    _, ys = jax.lax.scan(step, (first.astype(xs.dtype), zeros, zeros),
                         jnp.swapaxes(xs, 0, 1))
    return jnp.swapaxes(ys, 0, 1)


class Audio2Pose(nn.Module):
  """The official ``audio2poseLSTM`` (see the module docstring).

  Attributes:
    embedding_dim: width of both ResNet embeddings (official 256).
    hidden_size, num_layers: the LSTM (official 256, 2); the official loop
      feeds the LSTM output back where the image embedding went, so
      ``hidden_size`` must equal ``embedding_dim``.
    pose_dim: outputs of ``output`` (6: rotation, translation).
    blocks: basic blocks per ResNet layer (ResNet-34: (3, 4, 6, 3)).
    precision: matmul precision of the LSTM and the linear layers.

  Call: ``(image (B, H, W, 3), audio (B, T, 4, 41)) -> poses_norm
  (B, T + 1, 6)``; with ``with_intermediates=True``, ``(poses_norm,
  {name: array})`` with the names the module docstring lists.
  """
  embedding_dim: int = 256
  hidden_size: int = 256
  num_layers: int = 2
  pose_dim: int = 6
  blocks: Sequence[int] = RESNET34_BLOCKS
  precision: Any = None

  @nn.compact
  def __call__(self, image: Array, audio: Array, with_intermediates: bool = False
               ) -> Array | tuple[Array, dict[str, Array]]:
    if self.hidden_size != self.embedding_dim:
      raise ValueError("Audio2Pose: hidden_size must equal embedding_dim (the "
                       "LSTM output replaces the image embedding)")
    b, t = audio.shape[:2]
    inter: dict[str, Array] = {}
    blocks = tuple(self.blocks)
    img_em, img_feats = ResNetEmbedding(self.embedding_dim, blocks,
                                        name="em_img")(image)
    inter["em_img.layer4"] = img_feats["layer4"]
    inter["em_img"] = img_em
    # Each frame's (4, 41) block is a one-channel image: H = 4 rows, W = 41.
    frames = audio.reshape((b * t,) + audio.shape[2:] + (1,))
    aud_em, aud_feats = ResNetEmbedding(self.embedding_dim, blocks,
                                        name="em_audio")(frames)
    aud_em = aud_em.reshape(b, t, self.embedding_dim)
    inter["em_audio.maxpool"] = aud_feats["maxpool"]
    inter["em_audio.layer4"] = aud_feats["layer4"]
    inter["em_audio"] = aud_em
    lstm_out = FeedbackLSTM(self.hidden_size, self.num_layers, self.precision,
                            name="lstm")(aud_em, img_em)
    inter["lstm_out"] = lstm_out
    # The same head on the image embedding (row 0) and on every LSTM output.
    heads = jnp.concatenate([img_em[:, None], lstm_out], axis=1)
    poses = Linear(self.pose_dim, precision=self.precision, name="output")(heads)
    inter["poses_norm"] = poses
    return (poses, inter) if with_intermediates else poses


def example_inputs(batch: int = 1, frames: int = 2, size: int = 256
                   ) -> tuple[jax.ShapeDtypeStruct, jax.ShapeDtypeStruct]:
  """Abstract (image, audio) inputs, e.g. for ``jax.eval_shape(init)``."""
  return (jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32),
          jax.ShapeDtypeStruct((batch, frames, ROWS_PER_FRAME, NUM_FEATURES),
                               jnp.float32))


def abstract_variables(module: Audio2Pose) -> dict[str, Any]:
  """Shapes of ``module``'s variables (free: ``jax.eval_shape``); they do
  not depend on the image size or T, so small stand-ins are traced."""
  image, audio = example_inputs(size=32)
  return dict(jax.eval_shape(module.init, jax.random.key(0), image, audio))
