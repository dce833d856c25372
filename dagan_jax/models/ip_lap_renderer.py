"""IP_LAP's video renderer (Zhong et al., "Identity-Preserving Talking Face
Generation with Landmark and Appearance Priors", CVPR 2023, Sec. 3.2).

The renderer turns a target sketch (landmarks drawn as lines) into a face,
borrowing appearance from ``N`` reference frames of the same person:

1. **Warping** (:class:`DenseFlowNetwork`, paper Eq. 4-5): for each
   reference ``n``, an encoder reads the reference image and its own sketch
   (``h1`` 32 channels at full size, ``h2`` 256 at half size); SPADE blocks
   conditioned on the ``T`` = 5 target sketches (stacked on channels)
   predict a flow ``f_n`` (pixels, x then y) and a confidence ``w_n``
   (sigmoid). ``h1``, ``h2`` and the reference image are pull-warped by
   ``f_n`` and fused as ``sum_n w_n * warp_n / (sum_n w_n + 1e-5)``; the
   paper calls this a softmax, the code (followed here) normalises sigmoid
   weights by their sum.
2. **Translation** (:class:`TranslationNetwork`, Eq. 6): an encoder reads the
   target face with its lower half zeroed plus the target sketches; the
   decoder alternates SPADE blocks modulated by the fused warped features
   (``h2``, ``h1``, then the warped reference image) and AdaIN blocks
   modulated by an audio embedding (its own mel encoder, 80x16 mel chunk ->
   512), with a PixelShuffle x2 in between, and ends with a 7x7 conv and a
   sigmoid.

Conventions
-----------
* **Layout**: NHWC everywhere. Inputs, with ``B`` the batch, ``N`` the
  references, ``T`` the target sketches (5 officially), ``H = W = 128``:

  - ``face``: (B, H, W, 3) or (B, 1, H, W, 3), values in [0, 1]; rows
    ``H // 2 ..`` are zeroed inside (the mouth region to be generated);
  - ``target_sketches``: (B, T, H, W, 3); stacked on channels in t order;
  - ``ref_imgs``, ``ref_sketches``: (B, N, H, W, 3);
  - ``mel``: (B, 80, 16) (mel bins, time), singleton axes allowed anywhere
    after the batch (the official (B, 1, 1, 80, 16) reshapes to it).

  Outputs: ``(generated_face (B, H, W, 3) in (0, 1), wrapped_ref (B, H, W,
  3))``. The official ``Renderer.forward`` also returns two perceptual (VGG19)
  losses; they are training losses, not part of the forward pass, and are not
  computed here.
* **Colour order**: the network only sees 3 channels. The official code
  feeds cv2 frames, i.e. **BGR**: weights converted from an official
  checkpoint (:mod:`dagan_jax.convert.ip_lap_renderer`) expect BGR images
  and return BGR faces, so callers must flip RGB frames (``x[..., ::-1]``)
  on the way in and out.
* **Flow and warping** (the code's ``convert_flow_to_deformation``): the
  identity grid is :func:`dagan_jax.ops.make_coordinate_grid` (pixel centres
  at ``2 i / (n - 1) - 1``), the flow is added as ``2 f_x / (W - 1)``,
  ``2 f_y / (H - 1)``, and the result is sampled with torch's default
  ``grid_sample`` (bilinear, ``align_corners=False``, zero padding):
  :func:`dagan_jax.ops.grid_sample`'s defaults. The identity "warp" thus
  resamples by (W-1)/W about the centre, as the official code does. ``h2``
  is warped by the deformation resized bilinearly (``align_corners=False``)
  to its size; its fusion weights are the full-size weights (and the
  denominator, +1e-5 included) downsampled by nearest neighbour.
* **PixelShuffle** is torch's channel order: input channel ``c r^2 + i r +
  j`` becomes output channel ``c`` at sub-pixel row ``i``, column ``j``
  (:func:`pixel_shuffle`).
* **Official details kept**: IP_LAP's SPADE layer is not Park et al.'s (and
  not DaGAN's :class:`~dagan_jax.models.generator.SPADE`): the modulation
  goes through one 3x3 conv (256 channels) *without* an activation before
  the 3x3 ``gamma`` / ``beta`` convs, is used at its own size (no resize),
  and the output is ``n + n * gamma + beta`` with ``n`` the parameter-free
  InstanceNorm (eps 1e-5) of the input. AdaIN uses a 128-wide MLP (Linear +
  ReLU) and ``n * (1 + gamma) + beta``. The SPADE / AdaIN blocks use
  LeakyReLU(0.2); the final activation before ``conv_last`` is torch's
  default LeakyReLU(0.01). The translation encoder convs and ``conv_last``
  have no bias.
* **References in one batch**: the official loop runs the flow network once
  per reference; here the ``N`` references run as one batch of ``B * N``
  (reference ``n`` of sample ``b`` at index ``b * N + n``) and the terms
  depending only on the target sketches (the SPADE modulations) are computed
  once per sample. Same numbers up to float rounding (the sum over ``n`` is
  not ordered as the loop's). In training mode the flow network's two
  BatchNorms still normalise each reference with its own batch statistics
  and update their running averages once per reference, in order, exactly
  as the loop does (:func:`_per_reference_conv_bn`).
* **Names** follow the official attribute paths (``flow_module``,
  ``translation``, ``spade_layer_1/spade_layer_1/conv1``,
  ``audio_encoder_0/conv_block_0``, ``conv_5_0``, ...); the converter maps
  the Sequential indices of ``audio_encoder``, ``conv_block``, ``conv_5``
  and ``mlp_shared`` (``.0`` -> ``_0``).
* **Intermediates** (``mutable=['intermediates']``): ``gt_mask_face`` on
  the renderer; ``flow`` (B, N, H, W, 2), ``weight`` (B, N, H, W, 1),
  ``weight_sum`` (B, H, W, 1, before +1e-5), ``wrapped_h1``, ``wrapped_h2``,
  ``wrapped_ref`` on ``flow_module``; ``audio_feature`` (B, 512),
  ``conv2_relu``, ``pixel_suffle_1`` and the outputs of the blocks
  ``spade_1_out``, ``adain_1_out``, ``spade_2_out``, ``adain_2_out``,
  ``spade_4_out`` on ``translation`` (Flax forbids a sown name equal to a
  submodule's, hence the suffix).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dagan_jax import ops
from dagan_jax.models.layers import (BatchNorm, Conv2d, InstanceNorm, conv_bn,
                                     is_training, torch_uniform_init)

Array = jax.Array

#: The translation network's mel encoder (IP_LAP's ``audio_encoder``; the
#: Wav2Lip audio encoder): per block (out channels, kernel, stride, padding,
#: residual). An 80x16 mel chunk ends as 1x1x512.
AUDIO_ENCODER = (
    (32, 3, 1, 1, False), (32, 3, 1, 1, True), (32, 3, 1, 1, True),
    (64, 3, (3, 1), 1, False), (64, 3, 1, 1, True), (64, 3, 1, 1, True),
    (128, 3, 3, 1, False), (128, 3, 1, 1, True), (128, 3, 1, 1, True),
    (256, 3, (3, 2), 1, False), (256, 3, 1, 1, True),
    (512, 3, 1, 0, False), (512, 1, 1, 0, False))


def leaky_relu(x: Array, slope: float = 0.2) -> Array:
  return jnp.where(x >= 0, x, slope * x)


def pixel_shuffle(x: Array, r: int) -> Array:
  """``nn.PixelShuffle(r)`` on NHWC: (B, H, W, C r^2) -> (B, H r, W r, C).

  Torch's order: input channel ``c * r * r + i * r + j`` goes to output
  channel ``c`` at ``(h * r + i, w * r + j)``.
  """
  b, h, w, crr = x.shape
  if crr % (r * r):
    raise ValueError(f"pixel_shuffle: {crr} channels is not a multiple of "
                     f"{r}^2")
  c = crr // (r * r)
  x = x.reshape(b, h, w, c, r, r)
  return x.transpose(0, 1, 4, 2, 5, 3).reshape(b, h * r, w * r, c)


class Linear(nn.Module):
  """``torch.nn.Linear``: ``x @ kernel + bias`` with ``kernel`` (in, out)
  (the transpose of torch's ``weight``) and torch's default init."""
  features: int
  use_bias: bool = True

  @nn.compact
  def __call__(self, x: Array) -> Array:
    fan_in = x.shape[-1]
    kernel = self.param("kernel", torch_uniform_init(fan_in),
                        (fan_in, self.features))
    y = jnp.dot(x, kernel.astype(x.dtype))
    if self.use_bias:
      y = y + self.param("bias", torch_uniform_init(fan_in),
                         (self.features,)).astype(x.dtype)
    return y


def _share_modulation(norm: Array, gamma: Array, beta: Array) -> Array:
  """``norm + norm * gamma + beta`` where ``norm`` may hold ``g`` samples per
  sample of ``gamma``/``beta`` (consecutive along the batch)."""
  b = gamma.shape[0]
  g = norm.shape[0] // b
  if g * b != norm.shape[0]:
    raise ValueError(f"SPADE: input batch {norm.shape[0]} is not a multiple "
                     f"of the modulation batch {b}")
  n = norm.reshape((b, g) + norm.shape[1:])
  out = n + n * gamma[:, None] + beta[:, None]
  return out.reshape(norm.shape)


class SPADELayer(nn.Module):
  """IP_LAP's ``SPADELayer``: ``n + n * gamma(m) + beta(m)``, ``n`` the
  parameter-free InstanceNorm of the input, ``gamma`` and ``beta`` convs of
  ``conv1(m)`` (no activation in between). ``modulation`` must have the
  input's spatial size; its batch may divide the input's (the flow
  network's references share one modulation). Submodules ``conv1``,
  ``gamma``, ``beta``."""
  hidden_size: int = 256
  kernel_size: int = 3
  padding: int = 1

  @nn.compact
  def __call__(self, x: Array, modulation: Array) -> Array:
    c = x.shape[-1]
    kw = dict(kernel_size=self.kernel_size, padding=self.padding)
    hidden = Conv2d(self.hidden_size, name="conv1", **kw)(modulation)
    gamma = Conv2d(c, name="gamma", **kw)(hidden)
    beta = Conv2d(c, name="beta", **kw)(hidden)
    norm = InstanceNorm(name="instance_norm")(x)
    return _share_modulation(norm, gamma, beta)


class SPADE(nn.Module):
  """IP_LAP's ``SPADE`` block: ``conv_2(lrelu(spade_layer_2(conv_1(lrelu(
  spade_layer_1(x, m))), m)))``, LeakyReLU 0.2, channels kept. No residual."""
  hidden_size: int = 256

  @nn.compact
  def __call__(self, x: Array, modulation: Array) -> Array:
    c = x.shape[-1]
    x = SPADELayer(self.hidden_size, name="spade_layer_1")(x, modulation)
    x = Conv2d(c, 3, padding=1, name="conv_1")(leaky_relu(x))
    x = SPADELayer(self.hidden_size, name="spade_layer_2")(x, modulation)
    return Conv2d(c, 3, padding=1, name="conv_2")(leaky_relu(x))


class AdaINLayer(nn.Module):
  """IP_LAP's ``AdaINLayer``: ``n * (1 + gamma(z)) + beta(z)`` with ``n``
  the parameter-free InstanceNorm of ``x`` (B, H, W, C) and ``z`` (B, D) the
  audio feature; ``gamma``/``beta`` Linear layers on ``relu(mlp_shared_0(z))``
  (width 128)."""
  hidden_size: int = 128

  @nn.compact
  def __call__(self, x: Array, modulation: Array) -> Array:
    c = x.shape[-1]
    norm = InstanceNorm(name="InstanceNorm2d")(x)
    z = modulation.reshape(modulation.shape[0], -1)
    actv = nn.relu(Linear(self.hidden_size, name="mlp_shared_0")(z))
    gamma = Linear(c, name="mlp_gamma")(actv)[:, None, None, :]
    beta = Linear(c, name="mlp_beta")(actv)[:, None, None, :]
    return norm * (1 + gamma) + beta


class AdaIN(nn.Module):
  """IP_LAP's ``AdaIN`` block: as :class:`SPADE` with AdaIN layers."""

  @nn.compact
  def __call__(self, x: Array, modulation: Array) -> Array:
    c = x.shape[-1]
    x = AdaINLayer(name="adain_layer_1")(x, modulation)
    x = Conv2d(c, 3, padding=1, name="conv_1")(leaky_relu(x))
    x = AdaINLayer(name="adain_layer_2")(x, modulation)
    return Conv2d(c, 3, padding=1, name="conv_2")(leaky_relu(x))


class ConvBlock(nn.Module):
  """IP_LAP's (Wav2Lip's) ``Conv2d`` block: conv -> BatchNorm (-> + input
  when ``residual``) -> ReLU. Submodules ``conv_block_0``, ``conv_block_1``;
  BatchNorm folded into the conv by the inference rewrites
  (:func:`~dagan_jax.models.layers.conv_bn`)."""
  features: int
  kernel_size: int | tuple[int, int] = 3
  stride: int | tuple[int, int] = 1
  padding: int | tuple[int, int] = 1
  residual: bool = False

  @nn.compact
  def __call__(self, x: Array) -> Array:
    conv = Conv2d(self.features, self.kernel_size, stride=self.stride,
                  padding=self.padding, name="conv_block_0")
    norm = BatchNorm(name="conv_block_1")
    out = conv_bn(self, x, conv, norm)
    if self.residual:
      out = out + x
    return nn.relu(out)


def _per_reference_conv_bn(module: nn.Module, x: Array, conv: Conv2d,
                           norm: BatchNorm, num_refs: int) -> Array:
  """``norm(conv(x))`` for ``x`` holding ``num_refs`` references per sample
  (index ``b * num_refs + n``). Eval: one call over the whole batch. Train:
  the official loop's semantics, one BatchNorm call per reference (the same
  module, so its statistics are those of that reference's batch and the
  running averages are updated once per reference, in reference order)."""
  if not is_training(module, norm.use_running_average):
    return conv_bn(module, x, conv, norm)
  y = conv(x)
  y = y.reshape((y.shape[0] // num_refs, num_refs) + y.shape[1:])
  return jnp.stack([norm(y[:, n]) for n in range(num_refs)],
                   axis=1).reshape((-1,) + y.shape[2:])


def flow_to_deformation(flow: Array) -> Array:
  """The official ``convert_flow_to_deformation``: flow (B, H, W, 2) in
  pixels (x, y) -> sampling grid (B, H, W, 2) in [-1, 1] (pixel centres at
  ``2 i / (n - 1) - 1``, :func:`dagan_jax.ops.make_coordinate_grid`)."""
  _, h, w, _ = flow.shape
  grid = ops.make_coordinate_grid((h, w), flow.dtype)
  norm = jnp.concatenate([2 * (flow[..., :1] / (w - 1)),
                          2 * (flow[..., 1:] / (h - 1))], axis=-1)
  return grid[None] + norm


def warp(source: Array, deformation: Array) -> Array:
  """The official ``warping``: the deformation resized bilinearly
  (``align_corners=False``) to ``source``'s size when they differ, then
  torch's default ``grid_sample`` (bilinear, align_corners=False, zeros)."""
  h, w = source.shape[1:3]
  if deformation.shape[1:3] != (h, w):
    deformation = ops.resize_bilinear(deformation, (h, w))
  return ops.grid_sample(source, deformation)


class DenseFlowNetwork(nn.Module):
  """IP_LAP's ``DenseFlowNetwork`` (the renderer's ``flow_module``).

  ``__call__(ref_imgs (B, N, H, W, 3), ref_sketches (B, N, H, W, 3),
  driving_sketches (B, T, H, W, 3))`` -> ``(wrapped_h1 (B, H, W, 32),
  wrapped_h2 (B, H/2, W/2, 256), wrapped_ref (B, H, W, 3))``, the
  weight-normalised sums over the references (module docstring).
  """
  hidden_size: int = 256

  @nn.compact
  def __call__(self, ref_imgs: Array, ref_sketches: Array,
               driving_sketches: Array) -> tuple[Array, Array, Array]:
    b, n, h, w, c = ref_imgs.shape
    if ref_sketches.shape[:2] != (b, n):
      raise ValueError(f"DenseFlowNetwork: ref_imgs {ref_imgs.shape} and "
                       f"ref_sketches {ref_sketches.shape} differ in (B, N)")
    refs = ref_imgs.reshape(b * n, h, w, c)
    x = jnp.concatenate([refs, ref_sketches.reshape(b * n, h, w, -1)], axis=-1)
    # The T driving sketches stacked on channels, sketch t at 3t..3t+2.
    driving = driving_sketches.transpose(0, 2, 3, 1, 4).reshape(b, h, w, -1)

    h1 = nn.relu(_per_reference_conv_bn(
        self, x, Conv2d(32, 7, padding=3, name="conv1"),
        BatchNorm(name="conv1_bn"), n))
    h2 = nn.relu(_per_reference_conv_bn(
        self, h1, Conv2d(256, 3, stride=2, padding=1, name="conv2"),
        BatchNorm(name="conv2_bn"), n))
    driving_half = ops.resize_nearest(driving, h2.shape[1:3])

    s = SPADE(self.hidden_size, name="spade_layer_1")(h2, driving_half)
    s = SPADE(self.hidden_size, name="spade_layer_2")(s, driving_half)
    s = pixel_shuffle(s, 2)
    s = SPADE(self.hidden_size, name="spade_layer_4")(s, driving)

    flow = Conv2d(2, 7, padding=3, name="conv_4")(s)  # (B*N, H, W, 2)
    weight = nn.relu(Conv2d(32, 7, padding=3, name="conv_5_0")(s))
    weight = nn.sigmoid(Conv2d(1, 7, padding=3, name="conv_5_2")(weight))

    deformation = flow_to_deformation(flow)
    wrapped_h1 = warp(h1, deformation)
    wrapped_h2 = warp(h2, deformation)
    wrapped_ref = warp(refs, deformation)

    per_ref = lambda a: a.reshape((b, n) + a.shape[1:])  # noqa: E731
    weight_n = per_ref(weight)
    weight_half_n = ops.resize_nearest(weight, h2.shape[1:3])
    weight_half_n = per_ref(weight_half_n)
    weight_sum = jnp.sum(weight_n, axis=1)
    denominator = weight_sum + 1e-5
    fused_h1 = jnp.sum(per_ref(wrapped_h1) * weight_n, axis=1) / denominator
    fused_h2 = (jnp.sum(per_ref(wrapped_h2) * weight_half_n, axis=1)
                / ops.resize_nearest(denominator, h2.shape[1:3]))
    fused_ref = jnp.sum(per_ref(wrapped_ref) * weight_n, axis=1) / denominator

    self.sow("intermediates", "flow", per_ref(flow))
    self.sow("intermediates", "weight", weight_n)
    self.sow("intermediates", "weight_sum", weight_sum)
    self.sow("intermediates", "wrapped_h1", fused_h1)
    self.sow("intermediates", "wrapped_h2", fused_h2)
    self.sow("intermediates", "wrapped_ref", fused_ref)
    return fused_h1, fused_h2, fused_ref


class TranslationNetwork(nn.Module):
  """IP_LAP's ``TranslationNetwork`` (the renderer's ``translation``).

  ``__call__(translation_input (B, H, W, 3 + 3T), wrapped_ref (B, H, W, 3),
  wrapped_h1 (B, H, W, 32), wrapped_h2 (B, H/2, W/2, 256), mel (B, 80, 16,
  1))`` -> face (B, H, W, 3) in (0, 1).
  """

  @nn.compact
  def __call__(self, translation_input: Array, wrapped_ref: Array,
               wrapped_h1: Array, wrapped_h2: Array, mel: Array) -> Array:
    a = mel
    for i, (cout, k, stride, pad, res) in enumerate(AUDIO_ENCODER):
      a = ConvBlock(cout, k, stride, pad, res, name=f"audio_encoder_{i}")(a)
    audio_feature = a.reshape(a.shape[0], -1)  # (B, 512): 1x1 map
    self.sow("intermediates", "audio_feature", audio_feature)

    x = nn.relu(conv_bn(self, translation_input,
                        Conv2d(32, 7, padding=3, use_bias=False, name="conv1"),
                        BatchNorm(name="conv1_bn")))
    x = nn.relu(conv_bn(self, x,
                        Conv2d(256, 3, stride=2, padding=1, use_bias=False,
                               name="conv2"),
                        BatchNorm(name="conv2_bn")))
    self.sow("intermediates", "conv2_relu", x)

    x = SPADE(name="spade_1")(x, wrapped_h2)
    self.sow("intermediates", "spade_1_out", x)
    x = AdaIN(name="adain_1")(x, audio_feature)
    self.sow("intermediates", "adain_1_out", x)
    x = pixel_shuffle(x, 2)
    self.sow("intermediates", "pixel_suffle_1", x)
    x = SPADE(name="spade_2")(x, wrapped_h1)
    self.sow("intermediates", "spade_2_out", x)
    x = AdaIN(name="adain_2")(x, audio_feature)
    self.sow("intermediates", "adain_2_out", x)
    x = SPADE(name="spade_4")(x, wrapped_ref)
    self.sow("intermediates", "spade_4_out", x)

    # torch.nn.LeakyReLU() here: its default slope 0.01, not the blocks' 0.2.
    x = leaky_relu(x, 0.01)
    x = Conv2d(3, 7, padding=3, use_bias=False, name="conv_last")(x)
    return nn.sigmoid(x)


def _frames(x: Array, name: str) -> Array:
  """(B, H, W, C) from (B, H, W, C) or (B, 1, H, W, C)."""
  if x.ndim == 5:
    if x.shape[1] != 1:
      raise ValueError(f"Renderer: {name} {x.shape} must hold one frame per "
                       "sample (the official renderer generates T=1 frame)")
    return x[:, 0]
  if x.ndim != 4:
    raise ValueError(f"Renderer: {name} must be (B, H, W, C), got {x.shape}")
  return x


def _mel(mel: Array) -> Array:
  """(B, 80, 16, 1) from a mel chunk with singleton axes anywhere after B."""
  b = mel.shape[0]
  dims = [d for d in mel.shape[1:] if d != 1]
  if len(dims) != 2:
    raise ValueError(f"Renderer: mel must be one (mel bins, time) chunk per "
                     f"sample, got {mel.shape}")
  return mel.reshape(b, dims[0], dims[1], 1)


class Renderer(nn.Module):
  """IP_LAP's ``Renderer`` (forward pass; module docstring for layouts).

  ``__call__(face, target_sketches, ref_imgs, ref_sketches, mel)`` ->
  ``(generated_face, wrapped_ref)``, both (B, H, W, 3). Weights converted
  from the official checkpoint expect **BGR** images (flip RGB frames).
  Submodules ``flow_module`` (:class:`DenseFlowNetwork`), ``translation``
  (:class:`TranslationNetwork`). No constructor arguments, as the official
  ``Renderer()``.
  """

  @nn.compact
  def __call__(self, face: Array, target_sketches: Array, ref_imgs: Array,
               ref_sketches: Array, mel: Array) -> tuple[Array, Array]:
    face = _frames(face, "face")
    b, h, w, _ = face.shape
    if target_sketches.ndim != 5 or target_sketches.shape[0] != b:
      raise ValueError(f"Renderer: target_sketches must be (B, T, H, W, 3) "
                       f"with B={b}, got {target_sketches.shape}")
    wrapped_h1, wrapped_h2, wrapped_ref = DenseFlowNetwork(
        name="flow_module")(ref_imgs, ref_sketches, target_sketches)
    sketches = target_sketches.transpose(0, 2, 3, 1, 4).reshape(b, h, w, -1)
    rows = jnp.arange(h)[None, :, None, None]
    masked = jnp.where(rows < h // 2, face, jnp.zeros((), face.dtype))
    self.sow("intermediates", "gt_mask_face", masked)
    translation_input = jnp.concatenate([masked, sketches], axis=-1)
    generated = TranslationNetwork(name="translation")(
        translation_input, wrapped_ref, wrapped_h1, wrapped_h2, _mel(mel))
    return generated, wrapped_ref


def example_inputs(batch: int = 1, num_refs: int = 1, num_sketches: int = 5,
                   image_size: int = 128, mel_shape: Sequence[int] = (80, 16),
                   dtype=jnp.float32) -> tuple[Array, ...]:
  """Zero inputs of the right shapes (for ``init`` / ``jax.eval_shape``):
  ``(face, target_sketches, ref_imgs, ref_sketches, mel)``. Parameter shapes
  do not depend on ``batch`` or ``num_refs``."""
  s = image_size
  return (jnp.zeros((batch, s, s, 3), dtype),
          jnp.zeros((batch, num_sketches, s, s, 3), dtype),
          jnp.zeros((batch, num_refs, s, s, 3), dtype),
          jnp.zeros((batch, num_refs, s, s, 3), dtype),
          jnp.zeros((batch, *mel_shape), dtype))
