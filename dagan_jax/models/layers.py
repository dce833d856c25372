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
* **Kernels.** Convolutions and the norms' long sums go through
  :mod:`dagan_jax.compute`, which runs them with the kernel set chosen by
  the ``compute.kernels`` config field (plain XLA, or forms measured faster
  on XLA:CPU). Nothing here knows which backend runs.
* **Inference rewrites** (``compute.use(inference=True)``, set where a
  model is prepared for inference): exact-in-real-arithmetic eval-mode
  rewrites chosen from static shapes -- nearest x2 + 3x3 conv as four 2x2
  phase convs (:func:`upsample2_conv3x3`) and BatchNorm folded into the
  preceding conv (:func:`fold_batchnorm`); see :func:`conv_bn`. Same
  variables; results differ by float rounding only.
"""

from __future__ import annotations

import contextlib

import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dagan_jax import compute

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


def conv2d(x: Array, kernel: Array, bias: Array | None = None, *,
           stride: IntPair = 1, padding: IntPair = 0, dilation: IntPair = 1,
           groups: int = 1, precision: Any = None) -> Array:
  """``F.conv2d`` on NHWC input with an HWIO kernel and symmetric zero
  padding, by the kernel set in use (:func:`dagan_jax.compute.conv2d`)."""
  y = compute.conv2d(x, kernel, stride=_pair(stride), padding=_pair(padding),
                     dilation=_pair(dilation), groups=groups,
                     precision=precision)
  return compute.add_bias(y, bias)


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
  # Built in full before the conv (see compute.materialize).
  big = compute.materialize(jnp.concatenate(phases, axis=-1))  # (2,2,Ci,4Co)
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  y = conv2d(xp, big, None, precision=precision)  # (B, H+1, W+1, 4 Co)
  outs = []
  for idx in range(4):
    a, c = divmod(idx, 2)
    outs.append(y[:, a:a + h, c:c + w, idx * co:(idx + 1) * co])
  out = jnp.stack(outs, axis=3).reshape(b_, h, w, 2, 2, co)  # (B,H,W,a,b,Co)
  out = out.transpose(0, 1, 3, 2, 4, 5).reshape(b_, 2 * h, 2 * w, co)
  return compute.add_bias(out, bias)


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
  """Within this context (while tracing), every :class:`BatchNorm` in train
  mode synchronises its batch statistics over the devices of ``axis_name``
  (None: no synchronisation), like PyTorch's ``SyncBatchNorm``. The one way
  to synchronise them: a data-parallel step sets it around its loss, and no
  module takes an axis name::

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
    axes but the last (and over the devices of :func:`sync_batch_norm`'s
    axis, like SyncBatchNorm),
    then updates ``running = (1 - momentum) * running + momentum * batch``
    with the *unbiased* batch variance, as PyTorch does (momentum 0.1).

  Mode: see the module docstring (mutable ``batch_stats`` = train), or the
  explicit ``use_running_average`` attribute / call argument.

  Variables: params ``scale``, ``bias``; batch_stats ``mean``, ``var``.
  """
  use_running_average: bool | None = None
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
      axis_name = _SYNC_AXIS[-1]
      lead = x.ndim - 1
      # Sums through compute: on XLA:CPU its own long reductions here
      # cost more than the convolution around them (staged there).
      bc = lambda v: compute.block_broadcast(v, x.shape, 0, lead)  # noqa: E731
      xf = x.astype(jnp.float32)
      n = math.prod(x.shape[:-1])
      mean = compute.block_mean(xf, 0, lead)
      if axis_name is not None:
        mean = jax.lax.pmean(mean, axis_name)
        n = n * jax.lax.psum(1, axis_name)
      var = compute.block_mean(jnp.square(xf - bc(mean)), 0, lead)
      if axis_name is not None:
        var = jax.lax.pmean(var, axis_name)
      if not self.is_initializing():
        unbiased = var * (n / jnp.maximum(n - 1, 1))
        m = self.momentum
        ra_mean.value = (1 - m) * ra_mean.value + m * jax.lax.stop_gradient(mean)
        ra_var.value = (1 - m) * ra_var.value + m * jax.lax.stop_gradient(unbiased)
    else:
      mean, var = ra_mean.value, ra_var.value
      bc = lambda v: v  # noqa: E731  (no gradient to sum)
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
    # Sums over H, W through compute (see BatchNorm); per sample and channel.
    per = lambda v: compute.block_broadcast(v, x.shape, 1, 3)  # noqa: E731
    centred = x - per(compute.block_mean(x, 1, 3))
    var = compute.block_mean(jnp.square(centred), 1, 3)
    y = centred * per(jax.lax.rsqrt(var + self.epsilon))
    chan = lambda v: compute.block_broadcast(v, x.shape, 0, 3)  # noqa: E731
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
  """Whether ``module``'s inference rewrites apply now: switched on
  (``compute.use(inference=True)``), eval mode, not initialising."""
  override = norm.use_running_average if norm is not None else None
  return (compute.current().inference and not is_training(module, override)
          and not module.is_initializing())


def conv_bn(module: nn.Module, x: Array, conv: Conv2d, norm: "BatchNorm | None",
            *, upsample: bool = False) -> Array:
  """``norm(conv(upsample?(x)))`` for a block holding submodules ``conv`` and
  ``norm`` (``norm`` may be None: the conv alone), with exact fast paths in
  eval mode.

  With the inference rewrites on (``compute.use(inference=True)``) and the
  block in eval mode (``batch_stats`` immutable, not initialising), where
  it pays off (decided from static shapes):

  * ``upsample`` with a 3x3 / padding 1 conv on an input of at least
    ``PHASE_MIN_PIXELS`` pixels: nearest x2 + conv as
    :func:`upsample2_conv3x3` (2-5x faster on XLA:CPU);
  * the BatchNorm is folded into the conv (:func:`fold_batchnorm`) when the
    conv output has at least as many pixels as the kernel has taps per
    output channel (``B*H*W >= kh*kw*Cin``): scaling the kernel then costs
    less than the separate normalisation pass over the activations.

  Same variables, same result up to float rounding; without the rewrites
  the plain path runs in eval mode. (The convolution itself goes through
  :func:`conv2d` in every mode, with the kernel set in use.)

  In training mode the upsampling + conv takes the phase
  form under the same conditions (the conv's output, hence the batch
  statistics, are the same up to rounding; forward and both gradients do
  2.25x fewer multiply-adds: 2.6x faster on the project's CPU for DaGAN's
  up-blocks), and nothing else changes.
  """
  fast = _fast(module, norm)
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
      kernel, bias = compute.materialize((kernel, bias))
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
  generator). Submodules ``conv``, ``norm``. Inference rewrites:
  :func:`conv_bn`."""
  features: int
  kernel_size: IntPair = 3
  padding: IntPair = 1
  groups: int = 1

  @nn.compact
  def __call__(self, x: Array) -> Array:
    conv = Conv2d(self.features, self.kernel_size, padding=self.padding,
                  groups=self.groups, name="conv")
    norm = BatchNorm(name="norm")
    return nn.relu(conv_bn(self, x, conv, norm))


class DownBlock2d(nn.Module):
  """conv -> BatchNorm -> ReLU -> 2x2 average pool (encoder block).
  Submodules ``conv``, ``norm``. Inference rewrites: :func:`conv_bn`."""
  features: int
  kernel_size: IntPair = 3
  padding: IntPair = 1
  groups: int = 1

  @nn.compact
  def __call__(self, x: Array) -> Array:
    conv = Conv2d(self.features, self.kernel_size, padding=self.padding,
                  groups=self.groups, name="conv")
    norm = BatchNorm(name="norm")
    x = conv_bn(self, x, conv, norm)
    return avg_pool2(nn.relu(x))


class UpBlock2d(nn.Module):
  """Nearest x2 upsampling -> conv -> BatchNorm -> ReLU (decoder block).
  Submodules ``conv``, ``norm``. :func:`conv_bn` (phase convs instead of
  upsampling; BatchNorm folding with the inference rewrites)."""
  features: int
  kernel_size: IntPair = 3
  padding: IntPair = 1
  groups: int = 1

  @nn.compact
  def __call__(self, x: Array) -> Array:
    conv = Conv2d(self.features, self.kernel_size, padding=self.padding,
                  groups=self.groups, name="conv")
    norm = BatchNorm(name="norm")
    return nn.relu(conv_bn(self, x, conv, norm,
                           upsample=True))


class ResBlock2d(nn.Module):
  """Pre-activation residual block keeping resolution and channels:
  ``x + conv2(relu(norm2(conv1(relu(norm1(x))))))``.
  Submodules ``conv1``, ``conv2``, ``norm1``, ``norm2``.

  With the inference rewrites (eval mode only, :func:`conv_bn`): ``norm2``
  is folded into ``conv1``; ``norm1`` follows the residual sum and stays an
  elementwise pass."""
  kernel_size: IntPair = 3
  padding: IntPair = 1

  @nn.compact
  def __call__(self, x: Array) -> Array:
    c = x.shape[-1]
    norm1 = BatchNorm(name="norm1")
    conv1 = Conv2d(c, self.kernel_size, padding=self.padding, name="conv1")
    norm2 = BatchNorm(name="norm2")
    conv2 = Conv2d(c, self.kernel_size, padding=self.padding, name="conv2")
    if not _fast(self, norm2):
      out = nn.relu(norm1(x))
      out = conv1(out)
      out = nn.relu(norm2(out))
      out = conv2(out)
      return out + x
    out = nn.relu(norm1(x))
    out = nn.relu(conv_bn(self, out, conv1, norm2))
    out = conv_bn(self, out, conv2, None)
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

  @nn.compact
  def __call__(self, x: Array) -> list[Array]:
    chans = hourglass_channels(self.block_expansion, self.in_features,
                               self.num_blocks, self.max_features)["encoder"]
    outs = [x]
    for i, c in enumerate(chans):
      outs.append(DownBlock2d(c, 3, 1, name=f"down_blocks_{i}")(outs[-1]))
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

  @nn.compact
  def __call__(self, xs: Sequence[Array]) -> Array:
    chans = hourglass_channels(self.block_expansion, self.in_features,
                               self.num_blocks, self.max_features)["decoder"]
    xs = list(xs)
    out = xs.pop()
    for j, c in enumerate(chans):
      out = UpBlock2d(c, 3, 1, name=f"up_blocks_{j}")(out)
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

  @property
  def out_filters(self) -> int:
    return self.block_expansion + self.in_features

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kw = dict(block_expansion=self.block_expansion, in_features=self.in_features,
              num_blocks=self.num_blocks, max_features=self.max_features)
    return Decoder(**kw, name="decoder")(Encoder(**kw, name="encoder")(x))
