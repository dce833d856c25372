"""Building blocks shared by every DaGAN / DaGAN++ network (flax.linen, NHWC).

The blocks mirror the FOMM family's ``modules/util.py`` (Siarohin et al.,
"First Order Motion Model", NeurIPS 2019, Sec. 3 and supplementary) that DaGAN
(Hong et al., CVPR 2022) builds on, with these conventions:

* **Layout.** Activations are NHWC; convolution kernels are HWIO
  ``(kh, kw, in // groups, out)``. A PyTorch ``weight`` of shape
  ``(out, in // groups, kh, kw)`` becomes ``weight.transpose(2, 3, 1, 0)``.
* **Padding** is PyTorch's explicit, symmetric padding (``padding=3`` for a
  7x7 conv), never XLA's ``'SAME'`` (which is asymmetric for even kernels).
* **Names** follow the official attribute paths so that a checkpoint converts
  by a rename table (see ``docs/DESIGN.md``): a ModuleList index joins its
  parent with ``_`` (``down_blocks.0.conv.weight`` -> ``down_blocks_0/conv/kernel``).
* **Train / eval** of the stateful layers (:class:`BatchNorm`, spectral
  normalisation in :class:`SNConv2d`) is decided by whether the
  ``'batch_stats'`` collection is mutable in the current ``apply``:

  - ``module.apply(variables, x)`` -> eval: running statistics / stored
    spectral vectors, nothing changes;
  - ``module.apply(variables, x, mutable=['batch_stats'])`` -> train: batch
    statistics, running averages and power-iteration vectors updated.

  ``init`` never updates the running statistics. :class:`BatchNorm` also
  takes an explicit ``use_running_average`` override (attribute or call
  argument) for the rare case where the rule above is not wanted.
* **Initialisation** copies PyTorch's defaults so that training from scratch
  starts from the same distribution as the official code: conv weights and
  biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (``kaiming_uniform_(a=sqrt(5))``),
  norm scale 1, bias 0, running mean 0, running variance 1.
* **fast_eval** (blocks, off by default): exact-in-real-arithmetic eval-mode
  rewrites chosen from static shapes where they pay off on XLA:CPU -- nearest
  x2 + 3x3 conv as four 2x2 phase convs (:func:`upsample2_conv3x3`) and
  BatchNorm folded into the preceding conv (:func:`fold_batchnorm`); see
  :func:`conv_bn`. Same variables; results differ by float rounding only.
"""

from __future__ import annotations

import contextlib

import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dagan_jax import xla_options
from dagan_jax.ops import reductions, winograd
from dagan_jax.ops.conv_common import output_size
from dagan_jax.ops.im2col_conv import conv_im2col
from dagan_jax.ops.narrow_conv import conv_narrow_out
from dagan_jax.ops.tiled_dw_conv import conv_tiled_dw

Array = jax.Array
PRNGKey = jax.Array
Initializer = Callable[..., Array]

IntPair = int | tuple[int, int]


def _pair(v: IntPair) -> tuple[int, int]:
  if isinstance(v, int):
    return (v, v)
  a, b = v
  return (int(a), int(b))


def torch_uniform_init(fan_in: int) -> Initializer:
  """PyTorch's default conv/linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0

  def init(key: PRNGKey, shape: Sequence[int], dtype: Any = jnp.float32) -> Array:
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def kaiming_normal_fan_out(key: PRNGKey, shape: Sequence[int],
                           dtype: Any = jnp.float32) -> Array:
  """torchvision ResNet's conv init: N(0, 2 / fan_out), fan_out = kh*kw*out."""
  kh, kw, _, out = shape
  std = math.sqrt(2.0 / (kh * kw * out))
  return std * jax.random.normal(key, shape, dtype)


def is_training(module: nn.Module, override: bool | None = None) -> bool:
  """Train mode <=> ``'batch_stats'`` is mutable (and we are not initialising).

  ``override`` (a ``use_running_average`` flag) wins when given:
  ``use_running_average=True`` means eval.
  """
  if override is not None:
    return not override
  return (module.is_mutable_collection("batch_stats")
          and not module.is_initializing())


#: Output channels up to which a "same"-padded conv uses
#: :func:`~dagan_jax.ops.narrow_conv.conv_narrow_out` (measured on XLA:CPU:
#: forward + gradients of 7x7 64 -> 3 at 2x256x256 384 -> 126 ms, 7x7
#: 128 -> 16 at 2x64x64 91 -> 38 ms; at 32 outputs the gain depends on the
#: input width, at 60 it is a loss).
NARROW_MAX_OUT = 16

#: ... and from this many input channels: the route's matmuls contract over
#: the input channels, and with fewer (an RGB or depth stem at test widths)
#: they gain nothing, while its forward (a sum of ``kh * kw`` shifted slices)
#: is fused by XLA into every consumer of the conv's output: the 7x7 3 -> 4
#: stems of a 32x32 toy generator became 116 fusions of 49 slices each, and
#: the toy training step compiled in 36 s (25 s with this bound).
NARROW_MIN_IN = 8

#: Wide convs on tiny maps run as :func:`~dagan_jax.ops.im2col_conv.conv_im2col`:
#: on maps of at most ``IM2COL_ALWAYS_PIXELS`` pixels per image with a kernel
#: of at least ``IM2COL_MIN_WEIGHTS`` entries (XLA compiles a 3x3 conv on a
#: 2x2 map as a generic loop convolution: 512 -> 512 on 2x2x2, forward +
#: gradients, 39 -> 4 ms; 8x2x2 140 -> 6 ms), and where the output has at
#: most ``IM2COL_MAX_ROWS`` pixels in the whole batch and the kernel at least
#: ``IM2COL_WIDE_WEIGHTS`` entries (the hourglass bottoms: 1024 -> 1024 on
#: 2x4x4 83 -> 38 ms, 512 -> 1024 31 -> 14 ms). Narrower kernels gain less
#: than a millisecond or two (512 -> 512 on 2x4x4: 8.5 -> 6.3 ms) and at 128
#: rows (2x8x8, 8x4x4) XLA's convolution is as fast, so those keep it.
IM2COL_ALWAYS_PIXELS = 4
IM2COL_MIN_WEIGHTS = 9 * 256 * 256
IM2COL_MAX_ROWS = 64
IM2COL_WIDE_WEIGHTS = 9 * 512 * 1024


def _use_im2col(x: Array, kernel: Array, padding: tuple[int, int]) -> bool:
  ho, wo = output_size(x.shape, kernel.shape, padding)
  weights = math.prod(kernel.shape)
  if ho < 1 or wo < 1 or weights < IM2COL_MIN_WEIGHTS:
    return False
  return (ho * wo <= IM2COL_ALWAYS_PIXELS
          or (x.shape[0] * ho * wo <= IM2COL_MAX_ROWS
              and weights >= IM2COL_WIDE_WEIGHTS))


#: Stride-1 convs on batches of at most ``TILED_DW_MAX_BATCH`` images with an
#: even-sided output of at least ``TILED_DW_MIN_PIXELS`` pixels run as
#: :func:`~dagan_jax.ops.tiled_dw_conv.conv_tiled_dw` with 2x2 tiles (same
#: forward; the weight gradient sees 4x the batch). Measured on XLA:CPU,
#: forward + both gradients at batch 2: 3x3 256 -> 256 on 64x64 161 -> 152
#: ms, 128 -> 256 on 128x128 343 -> 316 ms, 64 -> 64 on 64x64 17 -> 11 ms,
#: 7x7 3 -> 64 on 256x256 178 -> 167 ms; at batch 8 it is a loss (608 -> 638
#: ms for the first).
TILED_DW_MAX_BATCH = 4
TILED_DW_MIN_PIXELS = 256
#: ... and at least this many multiply-adds (smaller convs gain nothing
#: measurable and would only add ops to compile).
TILED_DW_MIN_MACS = 10 ** 8


def _dw_tiles(x: Array, kernel: Array, padding: tuple[int, int]) -> int:
  """2 where :func:`conv_tiled_dw` applies with 2x2 tiles, else 0."""
  ho, wo = output_size(x.shape, kernel.shape, padding)
  ok = (x.shape[0] <= TILED_DW_MAX_BATCH and ho * wo >= TILED_DW_MIN_PIXELS
        and ho % 2 == 0 and wo % 2 == 0
        and x.shape[0] * ho * wo * math.prod(kernel.shape) >= TILED_DW_MIN_MACS)
  return 2 if ok else 0


#: Winograd F(2x2, 3x3) (:func:`dagan_jax.ops.winograd.conv3x3_f23`) runs a
#: 3x3, stride-1, padding-1 float32 conv when both channel counts are at
#: least ``WINOGRAD_MIN_CHANNELS`` and the output has at least
#: ``WINOGRAD_MIN_PIXELS`` pixels per image, on the CPU backend
#: (:func:`dagan_jax.xla_options.winograd_convs`). Forward + both gradients
#: at batch 2 on the project's CPU (C allocator keeping freed memory), XLA's
#: convolution -> Winograd: 256 -> 256 on 64x64 261 -> 137 ms, 512 -> 512
#: on 32x32 289 -> 197, on 8x8 29 -> 24, 128 -> 128 on 128x128 290 -> 175,
#: 64 -> 64 on 256x256 346 -> 276 (forward alone even), 64 -> 64 on 64x64
#: 40 -> 20; on 4x4 maps (15.8 vs 15.3 ms) it gains nothing.
WINOGRAD_MIN_CHANNELS = 64
WINOGRAD_MIN_PIXELS = 64


def _use_winograd(x: Array, kernel: Array, padding: tuple[int, int]) -> bool:
  return (kernel.shape[:2] == (3, 3) and padding == (1, 1)
          and x.dtype == jnp.float32
          and min(kernel.shape[2], kernel.shape[3]) >= WINOGRAD_MIN_CHANNELS
          and x.shape[1] * x.shape[2] >= WINOGRAD_MIN_PIXELS
          and xla_options.winograd_convs())


def conv2d(x: Array, kernel: Array, bias: Array | None = None, *,
           stride: IntPair = 1, padding: IntPair = 0, dilation: IntPair = 1,
           groups: int = 1, precision: Any = None) -> Array:
  """``F.conv2d`` on NHWC input with an HWIO kernel and symmetric zero padding.

  Narrow output heads (at most ``NARROW_MAX_OUT`` output channels and at
  least ``NARROW_MIN_IN`` input channels, stride 1, "same" padding, kernel
  3x3 or larger) run as
  :func:`dagan_jax.ops.narrow_conv.conv_narrow_out` (same values; their
  weight gradient is a matmul, 3-25x faster on XLA:CPU). Wide kernels on
  tiny maps (``_use_im2col``) run as
  :func:`dagan_jax.ops.im2col_conv.conv_im2col` (matmuls over the patch
  matrix: no transposed copy of the kernel in the input gradient). Wide
  3x3 "same" convs (``_use_winograd``; CPU, float32) run as Winograd
  F(2x2, 3x3), :func:`dagan_jax.ops.winograd.conv3x3_f23` (2.25x fewer
  multiply-adds forward and backward). Other stride-1 convs on small
  batches (``_dw_tiles``) run as
  :func:`dagan_jax.ops.tiled_dw_conv.conv_tiled_dw`: XLA's convolution
  forward, its weight gradient over 2x2 tiles of each image.
  """
  ph, pw = _pair(padding)
  kh, kw = kernel.shape[:2]
  if groups == 1 and _pair(stride) == (1, 1) and _pair(dilation) == (1, 1):
    k = kernel.astype(x.dtype)
    if (kernel.shape[-1] <= NARROW_MAX_OUT and kernel.shape[-2] >= NARROW_MIN_IN
        and min(kh, kw) >= 3
        and (ph, pw) == ((kh - 1) // 2, (kw - 1) // 2) and kh % 2 and kw % 2):
      return add_bias(conv_narrow_out(x, k, (ph, pw), precision), bias)
    if _use_im2col(x, kernel, (ph, pw)):
      return add_bias(conv_im2col(x, k, (ph, pw), precision), bias)
    if _use_winograd(x, kernel, (ph, pw)):
      return add_bias(winograd.conv3x3_f23(x, k, precision=precision), bias)
    tiles = _dw_tiles(x, kernel, (ph, pw))
    if tiles:
      return add_bias(conv_tiled_dw(x, k, (ph, pw), tiles, precision), bias)
  y = jax.lax.conv_general_dilated(
      x, kernel.astype(x.dtype), window_strides=_pair(stride),
      padding=((ph, ph), (pw, pw)), rhs_dilation=_pair(dilation),
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=groups, precision=precision)
  return add_bias(y, bias)


def add_bias(y: Array, bias: Array | None) -> Array:
  """``y + bias`` over the last (channel) axis; the bias gradient is a staged
  sum (:mod:`dagan_jax.ops.reductions`) instead of one long reduction."""
  if bias is None:
    return y
  return y + reductions.block_broadcast(bias.astype(y.dtype), y.shape, 0,
                                        y.ndim - 1)


def fold_batchnorm(kernel: Array, bias: Array | None, mean: Array, var: Array,
                   scale: Array | None, beta: Array | None,
                   epsilon: float = 1e-5) -> tuple[Array, Array]:
  """Eval-mode ``BatchNorm(conv(x))`` as one conv: returns (kernel', bias').

  ``s = scale / sqrt(var + eps)``; ``kernel' = kernel * s`` (per output
  channel), ``bias' = (bias - mean) * s + beta``. Exact in real arithmetic;
  float32 results differ from the two-step form by rounding only.
  """
  s = jax.lax.rsqrt(var + epsilon)
  if scale is not None:
    s = s * scale
  b = -mean if bias is None else bias - mean
  b = b * s
  if beta is not None:
    b = b + beta
  return kernel * s, b


#: Smallest low-resolution input (H * W) for which the phase form of
#: upsample + conv is used: below it the per-call construction of the
#: (2, 2, Ci, 4 Co) kernel costs more than it saves (XLA:CPU, measured: 2-5x
#: faster from 16x16 up, 5-13x slower at 2x2 and 4x4 with 1024 channels).
PHASE_MIN_PIXELS = 256

#: Taps of a 3x3 kernel that land on the same low-resolution pixel after a
#: nearest x2 upsampling, per output phase: phase 0 reads rows (i-1, i) with
#: kernel rows ([0], [1, 2]); phase 1 reads rows (i, i+1) with ([0, 1], [2]).
_PHASE_TAPS = (((0,), (1, 2)), ((0, 1), (2,)))


def upsample2_conv3x3(x: Array, kernel: Array, bias: Array | None = None,
                      precision: Any = None) -> Array:
  """``conv3x3(upsample_nearest2(x), padding=1)`` without the upsampling.

  Each output phase ``(a, b)`` (``out[2i + a, 2j + b]``) is a 2x2 conv of
  the low-resolution input whose taps are sums of 3x3 taps
  (``_PHASE_TAPS``); the four phases are one VALID 2x2 conv with 4x the
  output channels over the input padded by 1, then interleaved. 16 instead
  of 36 multiply-adds per low-res pixel and channel pair; exact in real
  arithmetic (float32 differs by rounding).
  """
  b_, h, w, _ = x.shape
  co = kernel.shape[-1]
  phases = []
  for rows in _PHASE_TAPS:
    for cols in _PHASE_TAPS:
      k = jnp.stack([jnp.stack([sum(kernel[r, c] for r in rr for c in cc)
                                for cc in cols]) for rr in rows])  # (2,2,Ci,Co)
      phases.append(k)
  big = jax.lax.optimization_barrier(jnp.concatenate(phases, axis=-1))  # (2,2,Ci,4Co)
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  y = conv2d(xp, big, None, precision=precision)  # (B, H+1, W+1, 4 Co)
  outs = []
  for idx in range(4):
    a, c = divmod(idx, 2)
    outs.append(y[:, a:a + h, c:c + w, idx * co:(idx + 1) * co])
  out = jnp.stack(outs, axis=3).reshape(b_, h, w, 2, 2, co)  # (B,H,W,a,b,Co)
  out = out.transpose(0, 1, 3, 2, 4, 5).reshape(b_, 2 * h, 2 * w, co)
  return add_bias(out, bias)


class Conv2d(nn.Module):
  """``torch.nn.Conv2d`` on NHWC input with an HWIO kernel.

  Attributes:
    features: output channels.
    kernel_size: ``k`` or ``(kh, kw)``.
    stride, padding, dilation: as in PyTorch (symmetric explicit padding).
    groups: grouped convolution (``feature_group_count``); the kernel is
      ``(kh, kw, in // groups, features)``.
    use_bias: add a bias (PyTorch ``bias=True``).
    padding_mode: ``'zeros'`` or ``'reflect'`` (``nn.ReflectionPad2d`` then an
      unpadded conv, as monodepth2's ``Conv3x3`` does).
    kernel_init, bias_init: default to PyTorch's uniform init.
    precision: passed to ``lax.conv_general_dilated``.

  Parameters: ``kernel`` (HWIO), ``bias`` (features,).
  """
  features: int
  kernel_size: IntPair = 3
  stride: IntPair = 1
  padding: IntPair = 0
  dilation: IntPair = 1
  groups: int = 1
  use_bias: bool = True
  padding_mode: str = "zeros"
  kernel_init: Initializer | None = None
  bias_init: Initializer | None = None
  precision: Any = None

  def kernel_shape(self, in_features: int) -> tuple[int, int, int, int]:
    kh, kw = _pair(self.kernel_size)
    if in_features % self.groups or self.features % self.groups:
      raise ValueError(
          f"Conv2d: in ({in_features}) and out ({self.features}) channels must "
          f"be divisible by groups ({self.groups})")
    return (kh, kw, in_features // self.groups, self.features)

  def pad_input(self, x: Array) -> Array:
    """Applies the reflect padding (zero padding is done inside the conv)."""
    if self.padding_mode not in ("zeros", "reflect"):
      raise ValueError(f"Conv2d: unknown padding_mode {self.padding_mode!r}")
    ph, pw = _pair(self.padding)
    if self.padding_mode == "reflect" and (ph or pw):
      x = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)), mode="reflect")
    return x

  def conv(self, x: Array, kernel: Array, bias: Array | None) -> Array:
    """The convolution of the (already reflect-padded) input with a given
    kernel and bias (used by :class:`SNConv2d`)."""
    padding = 0 if self.padding_mode == "reflect" else self.padding
    return conv2d(x, kernel, bias, stride=self.stride, padding=padding,
                  dilation=self.dilation, groups=self.groups,
                  precision=self.precision)

  @nn.compact
  def __call__(self, x: Array) -> Array:
    shape = self.kernel_shape(x.shape[-1])
    fan_in = shape[0] * shape[1] * shape[2]
    kernel = self.param("kernel", self.kernel_init or torch_uniform_init(fan_in),
                        shape)
    bias = None
    if self.use_bias:
      bias = self.param("bias", self.bias_init or torch_uniform_init(fan_in),
                        (self.features,))
    return self.conv(self.pad_input(x), kernel, bias)


def _l2_normalize(x: Array, eps: float = 1e-12) -> Array:
  """``torch.nn.functional.normalize(x, dim=0, eps)``: x / max(||x||, eps)."""
  return x / jnp.maximum(jnp.linalg.norm(x), eps)


class SNConv2d(Conv2d):
  """A :class:`Conv2d` wrapped in ``torch.nn.utils.spectral_norm``.

  The stored kernel is PyTorch's ``weight_orig``; the effective kernel is
  ``weight_orig / sigma`` with ``sigma = u . (W v)`` where ``W`` is
  ``weight_orig`` flattened to ``(out, in*kh*kw)`` in PyTorch's OIHW order
  (Miyato et al., "Spectral Normalization for GANs", ICLR 2018, Alg. 1).

  * eval (``batch_stats`` immutable): ``u``, ``v`` are the stored vectors,
    exactly as PyTorch computes the weight in ``eval()`` mode;
  * train (``batch_stats`` mutable): one power iteration first
    (``v = normalize(W^T u)``, ``u = normalize(W v)``, eps 1e-12, no
    gradient through ``u``, ``v``), the new vectors are stored.

  Variables: params ``kernel`` (HWIO), ``bias``; batch_stats ``u`` (out,),
  ``v`` (in*kh*kw,) -- PyTorch's ``weight_u``, ``weight_v``.
  """
  n_power_iterations: int = 1
  eps: float = 1e-12

  @nn.compact
  def __call__(self, x: Array) -> Array:
    shape = self.kernel_shape(x.shape[-1])
    kh, kw, cin, cout = shape
    fan_in = kh * kw * cin
    kernel = self.param("kernel", self.kernel_init or torch_uniform_init(fan_in),
                        shape)
    bias = None
    if self.use_bias:
      bias = self.param("bias", self.bias_init or torch_uniform_init(fan_in),
                        (self.features,))
    init_rng = self.make_rng("params") if self.is_initializing() else None
    u_var = self.variable(
        "batch_stats", "u",
        lambda: _l2_normalize(jax.random.normal(
            jax.random.fold_in(init_rng, 0), (cout,), jnp.float32), self.eps))
    v_var = self.variable(
        "batch_stats", "v",
        lambda: _l2_normalize(jax.random.normal(
            jax.random.fold_in(init_rng, 1), (cin * kh * kw,), jnp.float32),
            self.eps))
    w_mat = jnp.transpose(kernel, (3, 2, 0, 1)).reshape(cout, -1)  # (O, I*kh*kw)
    u, v = u_var.value, v_var.value
    if is_training(self):
      w_sg = jax.lax.stop_gradient(w_mat)
      for _ in range(self.n_power_iterations):
        v = _l2_normalize(w_sg.T @ u, self.eps)
        u = _l2_normalize(w_sg @ v, self.eps)
      u_var.value, v_var.value = u, v
    u = jax.lax.stop_gradient(u)
    v = jax.lax.stop_gradient(v)
    sigma = jnp.dot(u, w_mat @ v)
    return self.conv(self.pad_input(x), kernel / sigma, bias)


def make_conv(spectral: bool, **kwargs: Any) -> Conv2d:
  """A :class:`Conv2d`, or an :class:`SNConv2d` when ``spectral``."""
  return SNConv2d(**kwargs) if spectral else Conv2d(**kwargs)


_SYNC_AXIS: list[str | None] = [None]


@contextlib.contextmanager
def sync_batch_norm(axis_name: str | None):
  """Within this context (while tracing), every :class:`BatchNorm` without its
  own ``axis_name`` synchronises its batch statistics over ``axis_name``.

  For networks whose constructors take no ``axis_name`` (the ResNet encoders
  of the depth and pose networks) inside a data-parallel step::

    with sync_batch_norm('data'):
      loss, grads = jax.value_and_grad(loss_fn)(params, batch)
  """
  _SYNC_AXIS.append(axis_name)
  try:
    yield
  finally:
    _SYNC_AXIS.pop()


class BatchNorm(nn.Module):
  """PyTorch ``BatchNorm2d`` / ``SyncBatchNorm`` over the last (channel) axis.

  * eval: ``(x - running_mean) / sqrt(running_var + eps) * scale + bias``;
  * train: normalises by the batch mean and *biased* batch variance over all
    axes but the last (and over ``axis_name`` devices, like SyncBatchNorm),
    then updates ``running = (1 - momentum) * running + momentum * batch``
    with the *unbiased* batch variance, as PyTorch does (momentum 0.1).

  Mode: see the module docstring (mutable ``batch_stats`` = train), or the
  explicit ``use_running_average`` attribute / call argument.

  Variables: params ``scale``, ``bias``; batch_stats ``mean``, ``var``.
  """
  use_running_average: bool | None = None
  axis_name: str | None = None
  momentum: float = 0.1
  epsilon: float = 1e-5
  use_scale: bool = True
  use_bias: bool = True

  @nn.compact
  def __call__(self, x: Array, use_running_average: bool | None = None) -> Array:
    c = x.shape[-1]
    override = (use_running_average if use_running_average is not None
                else self.use_running_average)
    ra_mean = self.variable("batch_stats", "mean",
                            lambda: jnp.zeros((c,), jnp.float32))
    ra_var = self.variable("batch_stats", "var",
                           lambda: jnp.ones((c,), jnp.float32))
    if is_training(self, override):
      axis_name = self.axis_name if self.axis_name is not None else _SYNC_AXIS[-1]
      lead = x.ndim - 1
      # Staged sums (ops.reductions): XLA:CPU's own long reductions here
      # cost more than the convolution around them.
      bc = lambda v: reductions.block_broadcast(v, x.shape, 0, lead)  # noqa: E731
      xf = x.astype(jnp.float32)
      n = math.prod(x.shape[:-1])
      mean = reductions.block_mean(xf, 0, lead)
      if axis_name is not None:
        mean = jax.lax.pmean(mean, axis_name)
        n = n * jax.lax.psum(1, axis_name)
      var = reductions.block_mean(jnp.square(xf - bc(mean)), 0, lead)
      if axis_name is not None:
        var = jax.lax.pmean(var, axis_name)
      if not self.is_initializing():
        unbiased = var * (n / jnp.maximum(n - 1, 1))
        m = self.momentum
        ra_mean.value = (1 - m) * ra_mean.value + m * jax.lax.stop_gradient(mean)
        ra_var.value = (1 - m) * ra_var.value + m * jax.lax.stop_gradient(unbiased)
    else:
      mean, var = ra_mean.value, ra_var.value
      bc = lambda v: v  # noqa: E731  (no gradient reductions to stage)
    y = (x - bc(mean.astype(x.dtype))) * bc(
        jax.lax.rsqrt(var + self.epsilon).astype(x.dtype))
    if self.use_scale:
      y = y * bc(self.param("scale", nn.initializers.ones, (c,)).astype(x.dtype))
    if self.use_bias:
      y = y + bc(self.param("bias", nn.initializers.zeros, (c,)).astype(x.dtype))
    return y


class InstanceNorm(nn.Module):
  """PyTorch ``InstanceNorm2d`` (no running stats): per sample and channel
  over H, W with the biased variance; optional affine ``scale``/``bias``."""
  use_scale: bool = False
  use_bias: bool = False
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x: Array) -> Array:
    c = x.shape[-1]
    # Staged sums over H, W (see BatchNorm); per sample and channel.
    per = lambda v: reductions.block_broadcast(v, x.shape, 1, 3)  # noqa: E731
    centred = x - per(reductions.block_mean(x, 1, 3))
    var = reductions.block_mean(jnp.square(centred), 1, 3)
    y = centred * per(jax.lax.rsqrt(var + self.epsilon))
    chan = lambda v: reductions.block_broadcast(v, x.shape, 0, 3)  # noqa: E731
    if self.use_scale:
      y = y * chan(self.param("scale", nn.initializers.ones, (c,)))
    if self.use_bias:
      y = y + chan(self.param("bias", nn.initializers.zeros, (c,)))
    return y


def avg_pool2(x: Array) -> Array:
  """``nn.AvgPool2d(2)``: 2x2 mean, stride 2, odd rows/columns dropped."""
  b, h, w, c = x.shape
  h2, w2 = h // 2, w // 2
  x = x[:, :2 * h2, :2 * w2]
  return x.reshape(b, h2, 2, w2, 2, c).mean(axis=(2, 4))


def upsample_nearest2(x: Array) -> Array:
  """``F.interpolate(x, scale_factor=2)`` (nearest): each pixel -> 2x2."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def _simple_3x3(conv: Conv2d) -> bool:
  return (_pair(conv.kernel_size) == (3, 3) and _pair(conv.padding) == (1, 1)
          and _pair(conv.stride) == (1, 1) and _pair(conv.dilation) == (1, 1)
          and conv.groups == 1 and conv.padding_mode == "zeros")


def _fast(module: nn.Module, norm: "BatchNorm | None") -> bool:
  """Whether ``module``'s eval-mode fast paths apply now (eval, not init)."""
  override = norm.use_running_average if norm is not None else None
  return not is_training(module, override) and not module.is_initializing()


def conv_bn(module: nn.Module, x: Array, conv: Conv2d, norm: "BatchNorm | None",
            *, fast_eval: bool = False, upsample: bool = False) -> Array:
  """``norm(conv(upsample?(x)))`` for a block holding submodules ``conv`` and
  ``norm`` (``norm`` may be None: the conv alone), with exact fast paths in
  eval mode.

  With ``fast_eval`` and the block in eval mode (``batch_stats`` immutable,
  not initialising), where it pays off (decided from static shapes):

  * ``upsample`` with a 3x3 / padding 1 conv on an input of at least
    ``PHASE_MIN_PIXELS`` pixels: nearest x2 + conv as
    :func:`upsample2_conv3x3` (2-5x faster on XLA:CPU);
  * the BatchNorm is folded into the conv (:func:`fold_batchnorm`) when the
    conv output has at least as many pixels as the kernel has taps per
    output channel (``B*H*W >= kh*kw*Cin``): scaling the kernel then costs
    less than the separate normalisation pass over the activations.

  Same variables, same result up to float rounding; ``fast_eval=False``
  takes the plain path in eval mode. (The convolution itself goes through
  :func:`conv2d` in every mode, with its routes: Winograd F(2x2, 3x3) for
  wide 3x3 convs among them.)

  In training mode (any ``fast_eval``) the upsampling + conv takes the phase
  form under the same conditions (the conv's output, hence the batch
  statistics, are the same up to rounding; forward and both gradients do
  2.25x fewer multiply-adds: 2.6x faster on the project's CPU for DaGAN's
  up-blocks), and nothing else changes.
  """
  fast = fast_eval and _fast(module, norm)
  phase_shape = upsample and _simple_3x3(conv) and \
      x.shape[1] * x.shape[2] >= PHASE_MIN_PIXELS
  if phase_shape and not module.is_initializing() and is_training(
      module, norm.use_running_average if norm is not None else None):
    cp = module.variables["params"][conv.name]
    y = upsample2_conv3x3(x, cp["kernel"], cp.get("bias"), conv.precision)
    return y if norm is None else norm(y)
  phase = fast and phase_shape
  if not phase:
    if upsample:
      x = upsample_nearest2(x)
    if not fast:
      y = conv(x)
      return y if norm is None else norm(y)
  params = module.variables["params"]
  cp = params[conv.name]
  kh, kw, cin, cout = cp["kernel"].shape
  out_pixels = x.shape[0] * x.shape[1] * x.shape[2] * (4 if phase else 1)
  if _pair(conv.stride) != (1, 1):
    out_pixels //= _pair(conv.stride)[0] * _pair(conv.stride)[1]
  post = None
  kernel, bias = cp["kernel"], cp.get("bias")
  if norm is not None:
    if out_pixels >= kh * kw * cin:
      stats = module.variables["batch_stats"][norm.name]
      npar = params.get(norm.name, {})
      kernel, bias = fold_batchnorm(kernel, bias, stats["mean"], stats["var"],
                                    npar.get("scale"), npar.get("bias"),
                                    norm.epsilon)
      # Materialise the folded kernel: XLA:CPU would otherwise fuse the
      # scaling into the convolution and fall back to a slow loop conv.
      kernel, bias = jax.lax.optimization_barrier((kernel, bias))
    else:
      post = norm
  if phase:
    y = upsample2_conv3x3(x, kernel, bias, conv.precision)
  else:
    padding = conv.padding
    if conv.padding_mode == "reflect":
      ph, pw = _pair(conv.padding)
      x = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)), mode="reflect")
      padding = 0
    y = conv2d(x, kernel, bias, stride=conv.stride, padding=padding,
               dilation=conv.dilation, groups=conv.groups,
               precision=conv.precision)
  return y if post is None else post(y)


class SameBlock2d(nn.Module):
  """conv -> BatchNorm -> ReLU at the same resolution (``first`` of the
  generator). Submodules ``conv``, ``norm``. ``fast_eval``: :func:`conv_bn`."""
  features: int
  kernel_size: IntPair = 3
  padding: IntPair = 1
  groups: int = 1
  axis_name: str | None = None
  fast_eval: bool = False

  @nn.compact
  def __call__(self, x: Array) -> Array:
    conv = Conv2d(self.features, self.kernel_size, padding=self.padding,
                  groups=self.groups, name="conv")
    norm = BatchNorm(axis_name=self.axis_name, name="norm")
    return nn.relu(conv_bn(self, x, conv, norm, fast_eval=self.fast_eval))


class DownBlock2d(nn.Module):
  """conv -> BatchNorm -> ReLU -> 2x2 average pool (encoder block).
  Submodules ``conv``, ``norm``. ``fast_eval``: :func:`conv_bn`."""
  features: int
  kernel_size: IntPair = 3
  padding: IntPair = 1
  groups: int = 1
  axis_name: str | None = None
  fast_eval: bool = False

  @nn.compact
  def __call__(self, x: Array) -> Array:
    conv = Conv2d(self.features, self.kernel_size, padding=self.padding,
                  groups=self.groups, name="conv")
    norm = BatchNorm(axis_name=self.axis_name, name="norm")
    x = conv_bn(self, x, conv, norm, fast_eval=self.fast_eval)
    return avg_pool2(nn.relu(x))


class UpBlock2d(nn.Module):
  """Nearest x2 upsampling -> conv -> BatchNorm -> ReLU (decoder block).
  Submodules ``conv``, ``norm``. ``fast_eval``: :func:`conv_bn` (phase
  convs instead of upsampling, BatchNorm folding)."""
  features: int
  kernel_size: IntPair = 3
  padding: IntPair = 1
  groups: int = 1
  axis_name: str | None = None
  fast_eval: bool = False

  @nn.compact
  def __call__(self, x: Array) -> Array:
    conv = Conv2d(self.features, self.kernel_size, padding=self.padding,
                  groups=self.groups, name="conv")
    norm = BatchNorm(axis_name=self.axis_name, name="norm")
    return nn.relu(conv_bn(self, x, conv, norm, fast_eval=self.fast_eval,
                           upsample=True))


class ResBlock2d(nn.Module):
  """Pre-activation residual block keeping resolution and channels:
  ``x + conv2(relu(norm2(conv1(relu(norm1(x))))))``.
  Submodules ``conv1``, ``conv2``, ``norm1``, ``norm2``.

  ``fast_eval`` (eval mode only, :func:`conv_bn`): ``norm2`` is folded into
  ``conv1`` and wide 3x3 convs run as Winograd F(2x2, 3x3); ``norm1``
  follows the residual sum and stays an elementwise pass."""
  kernel_size: IntPair = 3
  padding: IntPair = 1
  axis_name: str | None = None
  fast_eval: bool = False

  @nn.compact
  def __call__(self, x: Array) -> Array:
    c = x.shape[-1]
    norm1 = BatchNorm(axis_name=self.axis_name, name="norm1")
    conv1 = Conv2d(c, self.kernel_size, padding=self.padding, name="conv1")
    norm2 = BatchNorm(axis_name=self.axis_name, name="norm2")
    conv2 = Conv2d(c, self.kernel_size, padding=self.padding, name="conv2")
    if not (self.fast_eval and _fast(self, norm2)):
      out = nn.relu(norm1(x))
      out = conv1(out)
      out = nn.relu(norm2(out))
      out = conv2(out)
      return out + x
    out = nn.relu(norm1(x))
    out = nn.relu(conv_bn(self, out, conv1, norm2, fast_eval=True))
    out = conv_bn(self, out, conv2, None, fast_eval=True)
    return out + x


def hourglass_channels(block_expansion: int, in_features: int, num_blocks: int,
                       max_features: int) -> dict[str, list[int]]:
  """FOMM's channel rule for the hourglass, as plain numbers.

  Encoder block ``i`` maps ``in_features`` (i = 0) or
  ``min(max_features, block_expansion * 2**i)`` to
  ``min(max_features, block_expansion * 2**(i+1))``. Decoder block ``j``
  (j = 0 is the deepest) produces ``min(max_features, block_expansion *
  2**(num_blocks-1-j))`` and is concatenated with the matching skip; the
  hourglass output has ``block_expansion + in_features`` channels.
  """
  f = lambda i: min(max_features, block_expansion * (2 ** i))
  enc = [f(i + 1) for i in range(num_blocks)]
  dec = [f(i) for i in reversed(range(num_blocks))]
  return {"encoder": enc, "decoder": dec,
          "out": [block_expansion + in_features]}


class Encoder(nn.Module):
  """Hourglass encoder: ``num_blocks`` :class:`DownBlock2d` s (``down_blocks_i``).

  Returns the list ``[x, d0(x), d1(d0(x)), ...]`` (input first), as FOMM does.
  """
  block_expansion: int
  in_features: int
  num_blocks: int = 3
  max_features: int = 256
  axis_name: str | None = None
  fast_eval: bool = False

  @nn.compact
  def __call__(self, x: Array) -> list[Array]:
    chans = hourglass_channels(self.block_expansion, self.in_features,
                               self.num_blocks, self.max_features)["encoder"]
    outs = [x]
    for i, c in enumerate(chans):
      outs.append(DownBlock2d(c, 3, 1, axis_name=self.axis_name,
                              fast_eval=self.fast_eval,
                              name=f"down_blocks_{i}")(outs[-1]))
    return outs


class Decoder(nn.Module):
  """Hourglass decoder: ``num_blocks`` :class:`UpBlock2d` s (``up_blocks_i``),
  each followed by concatenation (``[up, skip]`` on channels) with the
  encoder output of the same resolution. Output channels:
  ``block_expansion + in_features``."""
  block_expansion: int
  in_features: int
  num_blocks: int = 3
  max_features: int = 256
  axis_name: str | None = None
  fast_eval: bool = False

  @nn.compact
  def __call__(self, xs: Sequence[Array]) -> Array:
    chans = hourglass_channels(self.block_expansion, self.in_features,
                               self.num_blocks, self.max_features)["decoder"]
    xs = list(xs)
    out = xs.pop()
    for j, c in enumerate(chans):
      out = UpBlock2d(c, 3, 1, axis_name=self.axis_name,
                      fast_eval=self.fast_eval, name=f"up_blocks_{j}")(out)
      out = jnp.concatenate([out, xs.pop()], axis=-1)
    return out


class Hourglass(nn.Module):
  """FOMM's U-Net ("hourglass"): :class:`Encoder` then :class:`Decoder`.

  Input ``(B, H, W, in_features)`` with H, W divisible by ``2**num_blocks``;
  output ``(B, H, W, block_expansion + in_features)``. Submodules
  ``encoder``, ``decoder``.
  """
  block_expansion: int
  in_features: int
  num_blocks: int = 3
  max_features: int = 256
  axis_name: str | None = None
  fast_eval: bool = False

  @property
  def out_filters(self) -> int:
    return self.block_expansion + self.in_features

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kw = dict(block_expansion=self.block_expansion, in_features=self.in_features,
              num_blocks=self.num_blocks, max_features=self.max_features,
              axis_name=self.axis_name, fast_eval=self.fast_eval)
    return Decoder(**kw, name="decoder")(Encoder(**kw, name="encoder")(x))
