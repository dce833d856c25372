"""Audio2Head's keypoint generator ``audio2kp`` and its window stitching.

Audio2Head (Wang et al., "Audio2Head: Audio-driven One-shot Talking-head
Generation with Natural Head Motion", IJCAI 2021) predicts the FOMM
keypoints of every video frame from speech, the source image and the
head-pose boxes drawn from the audio2pose network's poses. The network is
the official ``AudioModel3D`` (``modules/audio2kp.py``), a 3-D hourglass
over a window of ``seq_len`` frames. Per window of ``L`` frames:

1. ``embedding``: each frame's (4, 41) block of speech rows (four 10 ms rows
   per 40 ms frame) goes through ConvTranspose2d(1, 8, (29, 14), padding
   (0, 11)) -> BatchNorm -> ReLU -> Conv2d(8, 2, 13, padding 6), giving
   (32, 32, 2), then nearest x2 to (64, 64, 2);
2. ``down_id``: the source image anti-alias downsampled by 0.25
   (:func:`dagan_jax.ops.anti_alias_downsample`, the FOMM Gaussian), the
   same (64, 64, 3) for every frame;
3. ``down_pose``: the L pose boxes (256, 256) with values {0, 255}, *not*
   normalised (the official code feeds them as drawn), downsampled the same
   way with the frames as channels;
4. ``volume``: ``[audio x2, id x3, pose x1]`` on channels, (B, L, 64, 64, 6);
5. ``predictor``: :class:`Hourglass3D` (``num_blocks`` levels, each halving
   T, H and W), output ``block_expansion + 6`` channels;
6. ``kp``: Conv3d (7, 7, 7), padding (3, 0, 0) -> (L, 58, 58, K) logits per
   window, softmax over the 58x58 positions of ``logits / temperature``,
   keypoints = expected FOMM grid position (:func:`ops.heatmap_to_keypoints`);
7. ``jacobian`` (``estimate_jacobian``): Conv2d 7x7 without padding on each
   frame of the hourglass output -> 4 entries per keypoint, weighted by the
   heatmap (:func:`ops.jacobian_from_maps`).

Conventions (ours):

* Inputs: ``audio`` (B, L, 4, 41), ``pose`` (B, L, 256, 256) (frame axis
  first, like the official ``x['pose']``), ``id_img`` NHWC (B, 256, 256, 3)
  in [0, 1].
* 3-D activations are channels-last **NDHWC** = (B, T, H, W, C) (the
  official N C T H W transposed); 3-D kernels are **DHWIO**. Outputs
  ``value`` (B, L, K, 2) as (x, y) in [-1, 1] and ``jacobian`` (B, L, K, 2,
  2) row-major, as the official ``out['value']`` / ``out['jacobian']``.
* Convolutions, 2-D and 3-D, go through :mod:`dagan_jax.compute`: the
  plain program runs one XLA 3-D convolution; the XLA:CPU kernel set, a
  sum of 2-D convolutions over the depth taps (XLA:CPU's own 3-D
  convolution is 3-10x slower).
* ``embedding_0`` is a PyTorch ConvTranspose2d with stride 1. Its ``kernel``
  is stored as (kh, kw, in, out) = torch's (in, out, kh, kw) transposed
  (2, 3, 0, 1), i.e. *not* flipped; the forward pass flips it spatially
  and runs the equivalent ordinary convolution with padding ``k - 1 - p``
  (the transposed convolution of stride 1 is that correlation).
* BatchNorm: :class:`~dagan_jax.models.layers.BatchNorm` over the last axis
  (the official SynchronizedBatchNorm{2,3}d): running statistics in eval
  (``batch_stats`` immutable), batch statistics synchronised through
  :func:`~dagan_jax.models.layers.sync_batch_norm` in training.
* Names follow the official attribute paths: ``embedding_0/1/3``,
  ``predictor/encoder/down_blocks_i/{res,norm_res,conv,norm}``,
  ``predictor/decoder/up_blocks_j/{conv,norm,res,norm2}``,
  ``predictor/decoder/res_blocks_j_0`` (ResBlock3d) and ``res_blocks_j_1``
  (its BatchNorm), ``kp``, ``jacobian``. The anti-alias Gaussians
  ``down_id.weight`` / ``down_pose.weight`` are recomputed, not stored.

Intermediates sown (collection ``'intermediates'``; :func:`named_intermediates`
gives them under the official fixture names): ``embedding`` (B*L, 32, 32, 2)
before the x2, ``down_id`` (B, 64, 64, 3), ``down_pose`` (B, 64, 64, L)
(frames as channels, as the official ``down_pose``), ``volume``, each
encoder block's and decoder up-block's output (``out``; decoder before the
skip concatenation), ``hourglass_out``, ``kp_logits`` (B*L, 58, 58, K) and
``jacobian_map`` (B*L, 58, 58, 4K), channel ``4k + e`` = entry ``e`` of
keypoint ``k``, frames batch-major as the official ``(bs * L)`` reshape.

Official quirks kept (the code is followed where it differs from the paper):

* the softmax temperature is the constant 0.1 of the constructor, not a
  config value (``parameters.yaml`` has none); ``num_w`` and ``seq`` are
  read by nothing;
* in the decoder, each skip goes through its own ResBlock3d + BatchNorm +
  ReLU (``res_blocks``) before the concatenation, the level-0 one over the
  6-channel volume itself, so ``hourglass_out[..., block_expansion:]`` is
  not the volume;
* the whole network needs L divisible by ``2 ** num_blocks`` (the official
  concatenations fail otherwise) and 256x256 images / (4, 41) speech blocks
  (the official code reshapes to 64x64).

Caveat (as for :class:`~dagan_jax.models.keypoint_detector.KPDetector`,
XLA:CPU): the official init of the ``jacobian`` head is an all-zero
kernel; pass freshly initialised variables to ``jax.jit`` as arguments,
not as closed-over constants (converted weights are not affected).

Windowing (pure numpy, the official ``audio2head`` loop of ``inference.py``):
:func:`window_plan`, :func:`window_pose_rows`, :func:`window_inputs`,
:func:`frame_sources`, :func:`stitch`. Windows of L frames start every L/2
frames; window 0 keeps its slots [0, 3L/4), later ones [L/4, 3L/4); frames
are taken in order until T are out (a window built past that is not run).
Slot j of the window starting at s holds speech block s + j (zeros past the
end) and the box of pose row min(s + j, T) (row T is audio2pose's last
row, the padding box). With L divisible by 4 the kept ranges tile the
timeline exactly, so output frame t is video frame t and T frames come out
for any T >= 1.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dagan_jax import compute, ops
from dagan_jax.models.layers import (BatchNorm, Conv2d, conv2d,
                                     hourglass_channels, torch_uniform_init)

Array = jax.Array
Triple = tuple[int, int, int]

#: The official constants of ``AudioModel3D`` (not in parameters.yaml).
TEMPERATURE = 0.1
IMAGE_SCALE = 0.25
#: Channels of the hourglass input: audio x2, id x3, pose x1.
VOLUME_CHANNELS = 6


def _triple(v: int | Sequence[int]) -> Triple:
  if isinstance(v, int):
    return (v, v, v)
  a, b, c = v
  return (int(a), int(b), int(c))


def conv3d(x: Array, kernel: Array, bias: Array | None = None, *,
           padding: int | Sequence[int] = 0, precision: Any = None) -> Array:
  """``F.conv3d`` (stride 1) on NDHWC input with a DHWIO kernel and
  symmetric zero padding ``(pd, ph, pw)``, through the compute seam
  (:func:`dagan_jax.compute.conv3d`: one XLA 3-D convolution in the plain
  program, 2-D convolutions over the depth taps on XLA:CPU)."""
  y = compute.conv3d(x, kernel, padding=_triple(padding), precision=precision)
  return compute.add_bias(y, bias)


def avg_pool3(x: Array) -> Array:
  """``nn.AvgPool3d(2)``: 2x2x2 mean over T, H, W (odd remainders dropped)."""
  b, t, h, w, c = x.shape
  t2, h2, w2 = t // 2, h // 2, w // 2
  x = x[:, :2 * t2, :2 * h2, :2 * w2]
  return x.reshape(b, t2, 2, h2, 2, w2, 2, c).mean(axis=(2, 4, 6))


def upsample_nearest3(x: Array) -> Array:
  """``F.interpolate(x, scale_factor=2)`` on a 5-D tensor (nearest): every
  voxel becomes 2x2x2 (T, H and W all double)."""
  for axis in (1, 2, 3):
    x = jnp.repeat(x, 2, axis=axis)
  return x


class Conv3d(nn.Module):
  """``torch.nn.Conv3d`` (stride 1, no groups) on NDHWC input.

  Parameters: ``kernel`` (kd, kh, kw, in, out), ``bias`` (out,); PyTorch's
  default uniform init.
  """
  features: int
  kernel_size: int | Sequence[int] = 3
  padding: int | Sequence[int] = 0
  use_bias: bool = True
  precision: Any = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kd, kh, kw = _triple(self.kernel_size)
    cin = x.shape[-1]
    fan_in = kd * kh * kw * cin
    kernel = self.param("kernel", torch_uniform_init(fan_in),
                        (kd, kh, kw, cin, self.features))
    bias = (self.param("bias", torch_uniform_init(fan_in), (self.features,))
            if self.use_bias else None)
    return conv3d(x, kernel, bias, padding=self.padding,
                  precision=self.precision)


class ConvTranspose2d(nn.Module):
  """``torch.nn.ConvTranspose2d`` with stride 1 (the only one the official
  network uses) on NHWC input.

  ``kernel`` is (kh, kw, in, out), torch's (in, out, kh, kw) weight
  transposed (2, 3, 0, 1) without a flip. With stride 1 the transposed
  convolution equals a correlation of the input zero-padded by
  ``k - 1 - p`` on each side with the spatially flipped kernel, which runs
  through :func:`dagan_jax.compute.conv2d`. Output size ``n + k - 1 - 2p``.
  Init: PyTorch's (its fan-in is ``out * kh * kw`` for transposed convs).
  """
  features: int
  kernel_size: tuple[int, int]
  padding: tuple[int, int] = (0, 0)
  use_bias: bool = True
  precision: Any = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kh, kw = self.kernel_size
    ph, pw = self.padding
    if ph > kh - 1 or pw > kw - 1:
      raise ValueError(f"ConvTranspose2d: padding {self.padding} larger than "
                       f"kernel_size - 1 {(kh - 1, kw - 1)} is not supported")
    fan_in = self.features * kh * kw
    kernel = self.param("kernel", torch_uniform_init(fan_in),
                        (kh, kw, x.shape[-1], self.features))
    bias = (self.param("bias", torch_uniform_init(fan_in), (self.features,))
            if self.use_bias else None)
    flipped = kernel[::-1, ::-1]
    return conv2d(x, flipped, bias, padding=(kh - 1 - ph, kw - 1 - pw),
                  precision=self.precision)


class ResBlock3d(nn.Module):
  """Pre-activation 3-D residual block keeping shape:
  ``x + conv2(relu(norm2(conv1(relu(norm1(x))))))``, 3x3x3 convs with
  padding 1. Submodules ``conv1``, ``conv2``, ``norm1``, ``norm2``."""
  kernel_size: int = 3
  padding: int = 1

  @nn.compact
  def __call__(self, x: Array) -> Array:
    c = x.shape[-1]
    out = nn.relu(BatchNorm(name="norm1")(x))
    out = Conv3d(c, self.kernel_size, self.padding, name="conv1")(out)
    out = nn.relu(BatchNorm(name="norm2")(out))
    out = Conv3d(c, self.kernel_size, self.padding, name="conv2")(out)
    return out + x


class DownBlock3d(nn.Module):
  """ResBlock3d -> BatchNorm -> ReLU -> conv -> BatchNorm -> ReLU -> 2x2x2
  average pool. Submodules ``res``, ``norm_res``, ``conv``, ``norm``; sows
  its output as ``out``."""
  features: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    out = ResBlock3d(name="res")(x)
    out = nn.relu(BatchNorm(name="norm_res")(out))
    out = Conv3d(self.features, 3, 1, name="conv")(out)
    out = nn.relu(BatchNorm(name="norm")(out))
    out = avg_pool3(out)
    self.sow("intermediates", "out", out)
    return out


class UpBlock3d(nn.Module):
  """Nearest x2 (T, H, W) -> conv -> BatchNorm -> ReLU -> ResBlock3d ->
  BatchNorm -> ReLU. Submodules ``conv``, ``norm``, ``res``, ``norm2``;
  sows its output as ``out``."""
  features: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    out = Conv3d(self.features, 3, 1, name="conv")(upsample_nearest3(x))
    out = nn.relu(BatchNorm(name="norm")(out))
    out = ResBlock3d(name="res")(out)
    out = nn.relu(BatchNorm(name="norm2")(out))
    self.sow("intermediates", "out", out)
    return out


class Encoder3D(nn.Module):
  """``num_blocks`` :class:`DownBlock3d` s (``down_blocks_i``), FOMM's channel
  rule (:func:`~dagan_jax.models.layers.hourglass_channels`). Returns the
  list ``[x, d0(x), d1(d0(x)), ...]``."""
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
      outs.append(DownBlock3d(c, name=f"down_blocks_{i}")(outs[-1]))
    return outs


class Decoder3D(nn.Module):
  """``num_blocks`` :class:`UpBlock3d` s (``up_blocks_j``, j = 0 deepest).
  After each, the encoder output of the same size goes through
  ``res_blocks_j_0`` (:class:`ResBlock3d`) -> ``res_blocks_j_1``
  (BatchNorm) -> ReLU and is concatenated after the up-block output.
  Output channels ``block_expansion + in_features``."""
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
      out = UpBlock3d(c, name=f"up_blocks_{j}")(out)
      skip = ResBlock3d(name=f"res_blocks_{j}_0")(xs.pop())
      skip = nn.relu(BatchNorm(name=f"res_blocks_{j}_1")(skip))
      out = jnp.concatenate([out, skip], axis=-1)
    return out


class Hourglass3D(nn.Module):
  """The official ``Hourglass3D``: :class:`Encoder3D` then :class:`Decoder3D`.

  Input (B, T, H, W, in_features) with T, H, W divisible by
  ``2 ** num_blocks``; output (B, T, H, W, block_expansion + in_features).
  Submodules ``encoder``, ``decoder``.
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
    step = 2 ** self.num_blocks
    if any(n % step for n in x.shape[1:4]):
      raise ValueError(f"Hourglass3D with {self.num_blocks} levels needs T, H, "
                       f"W divisible by {step}; got input {x.shape}")
    kw = dict(block_expansion=self.block_expansion,
              in_features=self.in_features, num_blocks=self.num_blocks,
              max_features=self.max_features)
    return Decoder3D(**kw, name="decoder")(Encoder3D(**kw, name="encoder")(x))


def _jacobian_bias_init(num_maps: int):
  """The official init of the Jacobian head: weight 0, bias identity."""
  def init(key, shape, dtype=jnp.float32):
    del key
    return jnp.tile(jnp.asarray([1.0, 0.0, 0.0, 1.0], dtype),
                    num_maps).reshape(shape)
  return init


class Audio2KP(nn.Module):
  """The official ``AudioModel3D`` (see the module docstring).

  Attributes (``parameters.yaml``'s): ``block_expansion``, ``max_features``,
  ``num_blocks``, ``num_kp``, ``seq_len`` (L), ``estimate_jacobian``;
  ``temperature`` and ``image_scale`` are the official constants 0.1 and
  0.25. Build from the config with :meth:`from_config`.

  Call: ``(audio (B, L, 4, 41), pose (B, L, 256, 256), id_img (B, 256, 256,
  3))`` -> ``{'value': (B, L, K, 2), 'jacobian': (B, L, K, 2, 2)}`` (no
  ``jacobian`` without ``estimate_jacobian``).
  """
  block_expansion: int
  max_features: int
  num_blocks: int
  num_kp: int
  seq_len: int
  estimate_jacobian: bool = True
  temperature: float = TEMPERATURE
  image_scale: float = IMAGE_SCALE

  @classmethod
  def from_config(cls, params: Mapping[str, Any]) -> "Audio2KP":
    """From the official ``parameters.yaml`` (the fixture's ``parameters``)."""
    missing = [k for k in ("block_expansion", "max_features", "num_blocks",
                           "num_kp", "seq_len", "estimate_jacobian")
               if k not in params]
    if missing:
      raise ValueError(f"audio2kp parameters lack {', '.join(missing)}")
    return cls(block_expansion=int(params["block_expansion"]),
               max_features=int(params["max_features"]),
               num_blocks=int(params["num_blocks"]),
               num_kp=int(params["num_kp"]),
               seq_len=int(params["seq_len"]),
               estimate_jacobian=bool(params["estimate_jacobian"]),
               temperature=float(params.get("temperature", TEMPERATURE)))

  def dummy_inputs(self, batch: int = 1, image_size: int = 256,
                   audio_shape: tuple[int, int] = (4, 41)
                   ) -> tuple[Array, Array, Array]:
    """Zero inputs of the official shapes (for ``init`` / ``eval_shape``)."""
    L = self.seq_len
    return (jnp.zeros((batch, L) + tuple(audio_shape), jnp.float32),
            jnp.zeros((batch, L, image_size, image_size), jnp.float32),
            jnp.zeros((batch, image_size, image_size, 3), jnp.float32))

  @nn.compact
  def __call__(self, audio: Array, pose: Array, id_img: Array
               ) -> dict[str, Array]:
    L, K = self.seq_len, self.num_kp
    if audio.ndim != 4 or audio.shape[1] != L:
      raise ValueError(f"Audio2KP expects audio (B, {L}, 4, C), got "
                       f"{audio.shape}")
    b = audio.shape[0]
    if pose.shape[:2] != (b, L) or pose.ndim != 4:
      raise ValueError(f"Audio2KP expects pose (B, {L}, H, W) with B = {b}, "
                       f"got {pose.shape}")
    if id_img.ndim != 4 or id_img.shape[0] != b or id_img.shape[-1] != 3:
      raise ValueError(f"Audio2KP expects id_img NHWC (B, H, W, 3) with B = "
                       f"{b}, got {id_img.shape}")
    dtype = id_img.dtype

    # Speech: one (4, C) block per frame, frames on the batch axis.
    x = audio.reshape(b * L, audio.shape[2], audio.shape[3], 1).astype(dtype)
    x = ConvTranspose2d(8, (29, 14), (0, 11), name="embedding_0")(x)
    x = nn.relu(BatchNorm(name="embedding_1")(x))
    x = Conv2d(2, 13, padding=6, name="embedding_3")(x)
    self.sow("intermediates", "embedding", x)
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    audio_volume = x.reshape((b, L) + x.shape[1:])  # (B, L, 64, 64, 2)

    down_id = ops.anti_alias_downsample(id_img, self.image_scale)
    self.sow("intermediates", "down_id", down_id)
    # The frames are the channels of the official down_pose; the blur is
    # per channel, so this is the same as blurring each frame alone.
    down_pose = ops.anti_alias_downsample(
        jnp.transpose(pose.astype(dtype), (0, 2, 3, 1)), self.image_scale)
    self.sow("intermediates", "down_pose", down_pose)
    size = down_id.shape[1:3]
    if audio_volume.shape[2:4] != size or down_pose.shape[1:3] != size:
      raise ValueError(
          f"Audio2KP: speech maps {audio_volume.shape[2:4]}, image maps "
          f"{size} and pose maps {down_pose.shape[1:3]} must agree (the "
          "official network needs (4, 41) speech blocks and 256x256 images)")
    id_volume = jnp.broadcast_to(down_id[:, None], (b, L) + down_id.shape[1:])
    pose_volume = jnp.transpose(down_pose, (0, 3, 1, 2))[..., None]
    volume = jnp.concatenate([audio_volume, id_volume, pose_volume], axis=-1)
    self.sow("intermediates", "volume", volume)

    predictor = Hourglass3D(self.block_expansion, VOLUME_CHANNELS,
                            self.num_blocks, self.max_features,
                            name="predictor")
    feature_map = predictor(volume)  # (B, L, h, w, C)
    self.sow("intermediates", "hourglass_out", feature_map)

    logits = Conv3d(K, 7, (3, 0, 0), name="kp")(feature_map)
    logits = logits.reshape((b * L,) + logits.shape[2:])  # (B*L, 58, 58, K)
    self.sow("intermediates", "kp_logits", logits)
    value, heatmap = ops.heatmap_to_keypoints(logits, self.temperature)
    out = {"value": value.reshape(b, L, K, 2)}
    if self.estimate_jacobian:
      frames = feature_map.reshape((b * L,) + feature_map.shape[2:])
      jacobian_map = Conv2d(4 * K, 7, padding=0,
                            kernel_init=nn.initializers.zeros,
                            bias_init=_jacobian_bias_init(K),
                            name="jacobian")(frames)
      self.sow("intermediates", "jacobian_map", jacobian_map)
      jac = ops.jacobian_from_maps(heatmap, jacobian_map)
      out["jacobian"] = jac.reshape(b, L, K, 2, 2)
    return out


def named_intermediates(intermediates: Mapping[str, Any]) -> dict[str, Array]:
  """The sown intermediates of one :class:`Audio2KP` apply under the official
  names (``embedding``, ``down_id``, ``down_pose``, ``volume``,
  ``encoder.down_blocks.{i}``, ``decoder.up_blocks.{j}``, ``hourglass_out``,
  ``kp_logits``, ``jacobian_map``), in our layouts (see the module
  docstring). Accepts the ``'intermediates'`` collection or the state dict
  holding it."""
  inter = intermediates.get("intermediates", intermediates)
  out = {k: v[0] for k, v in inter.items()
         if isinstance(v, (tuple, list))}
  predictor = inter.get("predictor", {})
  for part, blocks in (("encoder", "down_blocks"), ("decoder", "up_blocks")):
    for name, sub in predictor.get(part, {}).items():
      m = re.fullmatch(blocks + r"_(\d+)", name)
      if m and "out" in sub:
        out[f"{part}.{blocks}.{m.group(1)}"] = sub["out"][0]
  return out


# --------------------------------------------------------------------------
# Windows: the official audio2head loop

class Window(NamedTuple):
  """One window the official loop runs: it starts at video frame ``start``
  and its slots ``[keep_lo, keep_hi)`` become frames ``start + keep_lo`` ...
  of the output, in order."""
  start: int
  keep_lo: int
  keep_hi: int


def window_plan(num_frames: int, seq_len: int) -> list[Window]:
  """The windows the official ``audio2head`` runs for T = ``num_frames``.

  Windows are built at starts ``0, L/2, L, ...`` below T; window 0 keeps
  slots ``[0, 3L/4)``, later windows ``[L/4, 3L/4)`` (integer division, as
  the official ``seq_len // 4 * 3``), and frames are emitted in order until
  T are out: the last window run keeps fewer slots, windows after it are
  not run. T = 0 gives no window.

  Raises:
    ValueError: ``seq_len`` is not a positive multiple of 4 (the official
      kept ranges then skip or repeat frames, or keep none), or
      ``num_frames`` < 0.
  """
  if seq_len < 4 or seq_len % 4:
    raise ValueError(f"seq_len must be a positive multiple of 4, got {seq_len}"
                     ": otherwise the official kept ranges do not tile the "
                     "video frames")
  if num_frames < 0:
    raise ValueError(f"num_frames must be >= 0, got {num_frames}")
  hop, quarter = seq_len // 2, seq_len // 4
  plan: list[Window] = []
  total = 0
  for w, start in enumerate(range(0, num_frames, hop)):
    if total >= num_frames:
      break
    lo = 0 if w == 0 else quarter
    hi = quarter * 3
    n = min(hi - lo, num_frames - total)
    plan.append(Window(start, lo, lo + n))
    total += n
  return plan


def window_pose_rows(plan: Sequence[Triple], seq_len: int, num_frames: int
                     ) -> np.ndarray:
  """(W, L) int: the pose row each slot shows, ``min(start + j, T)``."""
  starts = np.asarray([w[0] for w in plan], np.int64).reshape(-1, 1)
  return np.minimum(starts + np.arange(seq_len), num_frames).astype(np.int32)


def window_inputs(audio_blocks: np.ndarray, boxes: np.ndarray,
                  plan: Sequence[Triple], seq_len: int
                  ) -> tuple[np.ndarray, np.ndarray]:
  """The official windows' inputs.

  Args:
    audio_blocks: (T, 4, C) speech blocks, one per video frame.
    boxes: (T + 1, H, W) pose boxes; row T is the padding box (audio2pose's
      last row).
    plan: :func:`window_plan` (any sequence of ``(start, lo, hi)``).
    seq_len: L.

  Returns:
    ``audio`` (W, L, 4, C) float32, zeros in the slots past the end;
    ``pose`` (W, L, H, W) float32, slot j of the window at s showing
    ``boxes[min(s + j, T)]``.
  """
  audio_blocks = np.asarray(audio_blocks, np.float32)
  boxes = np.asarray(boxes)
  t = audio_blocks.shape[0]
  if boxes.shape[0] != t + 1:
    raise ValueError(f"boxes must have T + 1 = {t + 1} rows (T speech blocks "
                     f"and the padding box), got {boxes.shape[0]}")
  rows = window_pose_rows(plan, seq_len, t)  # (W, L)
  padded = np.concatenate(
      [audio_blocks, np.zeros((1,) + audio_blocks.shape[1:], np.float32)])
  audio = padded[rows]  # row T of ``padded`` is the zero block
  pose = boxes[rows].astype(np.float32)
  return audio, pose


def frame_sources(plan: Sequence[Triple]) -> tuple[np.ndarray, np.ndarray]:
  """For each output frame, the window it comes from and the slot in it:
  ``(window (T,), local (T,))`` int32."""
  window, local = [], []
  for w, (_, lo, hi) in enumerate(plan):
    window += [w] * (hi - lo)
    local += range(lo, hi)
  return np.asarray(window, np.int32), np.asarray(local, np.int32)


def stitch(values: np.ndarray, jacobians: np.ndarray | None,
           plan: Sequence[Triple], num_frames: int
           ) -> tuple[np.ndarray, np.ndarray | None]:
  """Per-frame keypoints from the windows' outputs, in the official order.

  Args:
    values: (W, L, K, 2) keypoints of the windows of ``plan``.
    jacobians: (W, L, K, 2, 2) or None.
    plan: :func:`window_plan` for ``num_frames``.
    num_frames: T.

  Returns:
    ``(value (T, K, 2), jacobian (T, K, 2, 2) or None)``.
  """
  window, local = frame_sources(plan)
  if len(window) != num_frames:
    raise ValueError(f"the plan yields {len(window)} frames, expected "
                     f"{num_frames}")
  values = np.asarray(values)
  if values.shape[0] != len(plan):
    raise ValueError(f"{values.shape[0]} windows of keypoints for a plan of "
                     f"{len(plan)}")
  value = values[window, local]
  jac = None if jacobians is None else np.asarray(jacobians)[window, local]
  return value, jac


__all__ = ["Audio2KP", "Hourglass3D", "Encoder3D", "Decoder3D", "DownBlock3d",
           "UpBlock3d", "ResBlock3d", "Conv3d", "ConvTranspose2d", "conv3d",
           "avg_pool3", "upsample_nearest3", "named_intermediates", "Window",
           "window_plan", "window_pose_rows", "window_inputs", "frame_sources",
           "stitch", "TEMPERATURE", "IMAGE_SCALE", "VOLUME_CHANNELS"]
