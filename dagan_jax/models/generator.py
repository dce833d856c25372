"""DaGAN's depth-aware generators (Hong et al., CVPR 2022, Sec. 3.3).

Both generators encode the source image, warp the features with the dense
motion of :class:`~dagan_jax.models.dense_motion.DenseMotionNetwork`, mask
them with the occlusion map, and refine them with the **depth-aware
attention** (Sec. 3.3, Fig. 2): queries come from the encoded *source depth*
map, keys and values from the warped appearance features,

    q = ReLU(W_q * f_depth), k = ReLU(W_k * f_warp), v = ReLU(W_v * f_warp)
    out = gamma * softmax(q k^T) v + f_warp

over the ``N = h * w`` bottleneck pixels (row-major), with no 1/sqrt(d)
scaling, exactly as the released code. The softmax attention is computed by
a swappable function ``attention(q (B,N,d), k (B,M,d), v (B,M,C)) -> (B,N,C)``
(default :func:`dagan_jax.ops.attention.attention`, which is exact and
memory-linear for large maps); the (B, N, N) matrix itself is never returned,
only selected rows are sown for parity tests.

* :class:`DepthAwareGenerator` decodes with FOMM's bottleneck ResBlocks and
  up-blocks (``DaGAN_vox_adv_256.pth.tar``).
* :class:`SPADEDepthAwareGenerator` decodes with a SPADE decoder with
  spectral-normalised convs (Park et al., CVPR 2019) conditioned on the
  occlusion-masked deformed image (``SPADE_DaGAN_vox_adv_256.pth.tar``).

Inputs NHWC: ``source_image (B, H, W, C)``, ``source_depth (B, H, W, 1)``
(``disp0`` of the depth network), keypoint dicts. Output dict (official keys,
NHWC): ``mask``, ``sparse_deformed``, ``occlusion_map``, ``deformation``
(the dense motion, ``(B, h, w, 2)``), ``deformed`` (source image warped by it,
``(B, H, W, C)``), ``prediction`` ``(B, H, W, C)`` in (0, 1).
Intermediates sown (names of the parity fixture): ``enc_out``,
``src_depth_enc_out``, ``attn_in_warped``, ``attn_out``, ``attention_rows``
(rows 0, s, 2s, ... of the attention matrix, ``s = attention_rows_stride``),
``bottleneck_out``, ``up_out``; the dense motion network's under
``dense_motion_network``.

:class:`OcclusionAwareGenerator` is FOMM's generator (Siarohin et al.,
NeurIPS 2019, Sec. 3.2-3.3), the renderer Audio2Head ships: the same
encoder, dense motion, warp, occlusion and ResBlock decoder as
:class:`DepthAwareGenerator`, without the depth encoder and the attention.
The three share those stages through :class:`_OcclusionAwareBase`.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from dagan_jax import ops
from dagan_jax.models.dense_motion import DenseMotionNetwork
from dagan_jax.models.layers import (Conv2d, DownBlock2d, InstanceNorm,
                                     ResBlock2d, SameBlock2d, UpBlock2d,
                                     make_conv)

Array = jax.Array
KP = dict[str, Array]
AttentionFn = Callable[[Array, Array, Array], Array]


def default_attention(q: Array, k: Array, v: Array,
                      implementation: str = "auto") -> Array:
  """softmax(q k^T) v, no scaling: :func:`dagan_jax.ops.attention.attention`."""
  from dagan_jax.ops.attention import attention
  return attention(q, k, v, implementation=implementation)


def deform_input(inp: Array, deformation: Array) -> Array:
  """Pull-warps ``inp`` (B, H, W, C) by ``deformation`` (B, h, w, 2).

  When the sizes differ, the deformation is first resized bilinearly
  (``align_corners=False``) to (H, W), as the official ``deform_input``.
  """
  h, w = inp.shape[1:3]
  if deformation.shape[1:3] != (h, w):
    deformation = ops.resize_bilinear(deformation, (h, w))
  return ops.grid_sample(inp, deformation)


class DepthAwareAttention(nn.Module):
  """The depth-aware attention module (``AttnModule`` of the official code).

  ``__call__(source, feat)``: ``source`` the encoded source depth (queries),
  ``feat`` the warped appearance features (keys, values), both
  ``(B, h, w, in_dim)``; returns ``gamma * attn + feat``. Parameters
  ``query_conv``, ``key_conv`` (1x1, in_dim -> in_dim // 8), ``value_conv``
  (1x1, in_dim -> in_dim), ``gamma`` (1,), initialised to 0.
  """
  in_dim: int
  attention_fn: AttentionFn | None = None
  attention_implementation: str = "auto"
  attention_rows_stride: int = 128

  @nn.compact
  def __call__(self, source: Array, feat: Array) -> Array:
    b, h, w, c = feat.shape
    n = h * w
    q = nn.relu(Conv2d(self.in_dim // 8, 1, name="query_conv")(source))
    k = nn.relu(Conv2d(self.in_dim // 8, 1, name="key_conv")(feat))
    v = nn.relu(Conv2d(self.in_dim, 1, name="value_conv")(feat))
    gamma = self.param("gamma", nn.initializers.zeros, (1,))
    q = q.reshape(b, n, -1)  # (B, N, d), row-major pixels
    k = k.reshape(b, n, -1)  # (B, N, d)
    v = v.reshape(b, n, c)  # (B, N, C)
    if self.is_mutable_collection("intermediates"):
      from dagan_jax.ops.attention import attention_rows
      rows = list(range(0, n, self.attention_rows_stride))
      self.sow("intermediates", "attention_rows", attention_rows(q, k, rows))
    if self.attention_fn is not None:
      out = self.attention_fn(q, k, v)
    else:
      out = default_attention(q, k, v, self.attention_implementation)
    return gamma * out.reshape(b, h, w, c) + feat


def _channels(block_expansion: int, max_features: int, i: int) -> int:
  return min(max_features, block_expansion * (2 ** i))


class _OcclusionAwareBase(nn.Module):
  """FOMM's generator stages, shared by FOMM's and DaGAN's generators
  (official constructor arguments as fields).

  * :meth:`setup_encoder`: ``first`` (7x7 SameBlock2d), ``down_blocks_i``
    and, with ``dense_motion_params``, ``dense_motion_network``;
  * :meth:`setup_resblock_decoder`: ``bottleneck_r{i}``, ``up_blocks_i``,
    ``final`` (7x7 conv, padding 3);
  * :meth:`encode` (sows ``enc_out``), :meth:`warp` (dense motion, the
    features pulled by the deformation and masked by the occlusion map, the
    deformed source image), :meth:`decode_resblocks` (sows
    ``bottleneck_out``, ``up_out``; returns the sigmoid prediction).
  """
  num_channels: int
  num_kp: int
  block_expansion: int
  max_features: int
  num_down_blocks: int
  num_bottleneck_blocks: int
  estimate_occlusion_map: bool = False
  dense_motion_params: Any = None
  estimate_jacobian: bool = False

  def setup_encoder(self) -> None:
    be, mf, nd = self.block_expansion, self.max_features, self.num_down_blocks
    self.first = SameBlock2d(be, 7, 3)
    self.down_blocks = [DownBlock2d(_channels(be, mf, i + 1), 3, 1)
                        for i in range(nd)]
    if self.dense_motion_params is not None:
      self.dense_motion_network = DenseMotionNetwork(
          num_kp=self.num_kp, num_channels=self.num_channels,
          estimate_occlusion_map=self.estimate_occlusion_map,
          **dict(self.dense_motion_params))

  def setup_resblock_decoder(self) -> None:
    be, mf, nd = self.block_expansion, self.max_features, self.num_down_blocks
    for i in range(self.num_bottleneck_blocks):
      setattr(self, f"bottleneck_r{i}", ResBlock2d(3, 1))
    self.up_blocks = [UpBlock2d(_channels(be, mf, nd - i - 1), 3, 1)
                      for i in range(nd)]
    self.final = Conv2d(self.num_channels, 7, padding=3)

  def encode(self, source_image: Array) -> Array:
    """``first`` then the down-blocks (sown as ``enc_out``)."""
    out = self.first(source_image)
    for block in self.down_blocks:
      out = block(out)
    self.sow("intermediates", "enc_out", out)
    return out

  def warp(self, out: Array, source_image: Array, kp_driving: KP,
           kp_source: KP) -> tuple[Array, dict[str, Array], Array | None]:
    """Dense motion, then the encoded features ``out`` pulled by the
    deformation (resized to them when the sizes differ) and multiplied by
    the occlusion map (resized bilinearly likewise).

    Returns ``(features, output dict, occlusion map at the features' size
    or None)``; without ``dense_motion_params`` the features pass unchanged
    and the dict is empty.
    """
    output: dict[str, Array] = {}
    if self.dense_motion_params is None:
      return out, output, None
    dense = self.dense_motion_network(source_image, kp_driving, kp_source)
    output["mask"] = dense["mask"]
    output["sparse_deformed"] = dense["sparse_deformed"]
    deformation = dense["deformation"]
    output["deformation"] = deformation
    out = deform_input(out, deformation)
    occlusion_map = None
    if "occlusion_map" in dense:
      occlusion_map = dense["occlusion_map"]
      output["occlusion_map"] = occlusion_map
      if occlusion_map.shape[1:3] != out.shape[1:3]:
        occlusion_map = ops.resize_bilinear(occlusion_map, out.shape[1:3])
      out = out * occlusion_map
    output["deformed"] = deform_input(source_image, deformation)
    return out, output, occlusion_map

  def decode_resblocks(self, out: Array) -> Array:
    """Bottleneck ResBlocks, up-blocks, ``final`` and a sigmoid."""
    for i in range(self.num_bottleneck_blocks):
      out = getattr(self, f"bottleneck_r{i}")(out)
    self.sow("intermediates", "bottleneck_out", out)
    for block in self.up_blocks:
      out = block(out)
    self.sow("intermediates", "up_out", out)
    return jax.nn.sigmoid(self.final(out))


class _DepthAwareBase(_OcclusionAwareBase):
  """Encoder + dense motion + depth-aware attention shared by both DaGAN
  generators (official constructor arguments as fields).

  Entry points (linen ``method=``), so that animation can encode the source
  once and decode every driving frame:

  * ``encode_source(source_image, source_depth)`` ->
    ``{'enc_out', 'src_depth_enc_out'}``: the appearance and source-depth
    encodings (independent of the driving frame);
  * ``decode(features, source_image, kp_driving, kp_source,
    source_depth=None, driving_depth=None)`` -> the output dict;
  * ``__call__`` = ``decode(encode_source(...), ...)``.
  """
  attention_fn: AttentionFn | None = None
  attention_implementation: str = "auto"
  attention_rows_stride: int = 128

  def setup(self):
    be, mf, nd = self.block_expansion, self.max_features, self.num_down_blocks
    self.setup_encoder()
    self.src_first = SameBlock2d(be, 7, 3)
    self.src_down_blocks = [DownBlock2d(_channels(be, mf, i + 1), 3, 1)
                            for i in range(nd)]
    self.AttnModule = DepthAwareAttention(
        _channels(be, mf, nd), attention_fn=self.attention_fn,
        attention_implementation=self.attention_implementation,
        attention_rows_stride=self.attention_rows_stride)
    self.setup_decoder()

  def setup_decoder(self) -> None:
    """Submodules of the decoder (subclasses)."""

  def decode_features(self, out: Array, output: dict[str, Array],
                      occlusion_map: Array | None, source_image: Array
                      ) -> Array:
    """The prediction from the attended features (subclasses)."""
    raise NotImplementedError

  def encode_source(self, source_image: Array, source_depth: Array
                    ) -> dict[str, Array]:
    """Appearance and source-depth encodings (no driving input needed)."""
    out = self.encode(source_image)
    src = self.src_first(source_depth)
    for block in self.src_down_blocks:
      src = block(src)
    self.sow("intermediates", "src_depth_enc_out", src)
    return {"enc_out": out, "src_depth_enc_out": src}

  def decode(self, features: dict[str, Array], source_image: Array,
             kp_driving: KP, kp_source: KP, source_depth: Array | None = None,
             driving_depth: Array | None = None) -> dict[str, Array]:
    """Motion, warping, attention and decoding for one set of driving
    keypoints, given :meth:`encode_source` 's features."""
    del source_depth, driving_depth  # encoded already / unused (official)
    out, src = features["enc_out"], features["src_depth_enc_out"]
    out, output, occlusion_map = self.warp(out, source_image, kp_driving,
                                           kp_source)
    if self.dense_motion_params is not None:
      self.sow("intermediates", "attn_in_warped", out)
      out = self.AttnModule(src, out)
      self.sow("intermediates", "attn_out", out)
    output["prediction"] = self.decode_features(out, output, occlusion_map,
                                                source_image)
    return output

  def __call__(self, source_image: Array, kp_driving: KP, kp_source: KP,
               source_depth: Array, driving_depth: Array | None = None
               ) -> dict[str, Array]:
    features = self.encode_source(source_image, source_depth)
    return self.decode(features, source_image, kp_driving, kp_source,
                       source_depth, driving_depth)


class DepthAwareGenerator(_DepthAwareBase):
  """DaGAN's ``DepthAwareGenerator`` (official constructor arguments).

  Submodules: ``dense_motion_network``, ``first``, ``down_blocks_i``,
  ``src_first``, ``src_down_blocks_i``, ``AttnModule``, ``bottleneck_r{i}``,
  ``up_blocks_i``, ``final`` (7x7 conv, padding 3, then sigmoid).

  ``__call__(source_image, kp_driving, kp_source, source_depth,
  driving_depth=None)``; ``driving_depth`` is accepted and unused, as in the
  official code. ``encode_source`` / ``decode``: see :class:`_DepthAwareBase`.
  """

  def setup_decoder(self) -> None:
    self.setup_resblock_decoder()

  def decode_features(self, out, output, occlusion_map, source_image):
    del output, occlusion_map, source_image
    return self.decode_resblocks(out)


class OcclusionAwareGenerator(_OcclusionAwareBase):
  """FOMM's ``OcclusionAwareGenerator`` as Audio2Head ships it (official
  constructor arguments; config ``generator_params`` + ``common_params``).

  Encoder (``first``, ``down_blocks_i``), ``dense_motion_network`` (FOMM's,
  :class:`DenseMotionNetwork`), the encoded features pulled by the
  deformation and masked by the occlusion map, then ``bottleneck_r{i}``,
  ``up_blocks_i``, ``final`` and a sigmoid. No depth anywhere.

  ``__call__(source_image, kp_driving, kp_source)`` -> ``mask``,
  ``sparse_deformed``, ``deformation``, ``occlusion_map``, ``deformed``,
  ``prediction`` (NHWC, as :class:`DepthAwareGenerator`'s; the first five
  only with ``dense_motion_params``). The official ``forward`` encodes the
  source on every call; ``encode_source(source_image)`` -> ``{'enc_out'}``
  and ``decode(features, source_image, kp_driving, kp_source)`` split it so
  that a video encodes its source once. Every entry point also accepts
  (and ignores) ``source_depth`` / ``driving_depth``, so DaGAN's animation
  code can drive it unchanged; ``attention_implementation`` is accepted for
  :func:`dagan_jax.models.build.build_models`, which passes it to every
  generator (this one has no attention).
  """
  attention_implementation: str = "auto"

  def setup(self):
    self.setup_encoder()
    self.setup_resblock_decoder()

  def encode_source(self, source_image: Array,
                    source_depth: Array | None = None) -> dict[str, Array]:
    """The encoded source (independent of the driving keypoints)."""
    del source_depth
    return {"enc_out": self.encode(source_image)}

  def decode(self, features: dict[str, Array], source_image: Array,
             kp_driving: KP, kp_source: KP, source_depth: Array | None = None,
             driving_depth: Array | None = None) -> dict[str, Array]:
    """The output dict from :meth:`encode_source` 's features."""
    del source_depth, driving_depth
    out, output, _ = self.warp(features["enc_out"], source_image, kp_driving,
                               kp_source)
    output["prediction"] = self.decode_resblocks(out)
    return output

  def __call__(self, source_image: Array, kp_driving: KP, kp_source: KP,
               source_depth: Array | None = None,
               driving_depth: Array | None = None) -> dict[str, Array]:
    del source_depth, driving_depth
    return self.decode(self.encode_source(source_image), source_image,
                       kp_driving, kp_source)


# --------------------------------------------------------------------------
# SPADE decoder

def leaky_relu(x: Array) -> Array:
  return nn.leaky_relu(x, 0.2)


class SPADE(nn.Module):
  """Spatially-adaptive normalisation (Park et al., CVPR 2019, Eq. 1).

  ``InstanceNorm(x) * (1 + gamma(seg)) + beta(seg)`` with ``seg`` resized
  (nearest) to ``x``; ``gamma``/``beta`` from a shared 3x3 conv + ReLU with
  ``nhidden`` channels. Submodules ``mlp_shared_0``, ``mlp_gamma``,
  ``mlp_beta``.
  """
  norm_nc: int
  nhidden: int = 128

  @nn.compact
  def __call__(self, x: Array, segmap: Array) -> Array:
    normalized = InstanceNorm(name="param_free_norm")(x)
    segmap = ops.resize_nearest(segmap, x.shape[1:3])
    actv = nn.relu(Conv2d(self.nhidden, 3, padding=1, name="mlp_shared_0")(segmap))
    gamma = Conv2d(self.norm_nc, 3, padding=1, name="mlp_gamma")(actv)
    beta = Conv2d(self.norm_nc, 3, padding=1, name="mlp_beta")(actv)
    return normalized * (1 + gamma) + beta


class SPADEResnetBlock(nn.Module):
  """SPADE residual block with spectral-normalised convs (``norm_G``
  ``'spadespectralinstance'``): ``shortcut(x) + conv_1(lrelu(norm_1(conv_0(
  lrelu(norm_0(x))))))``, the learned shortcut ``conv_s(norm_s(x))`` (1x1, no
  bias, no activation) when ``fin != fout``; LeakyReLU slope 0.2."""
  fin: int
  fout: int
  spectral: bool = True
  dilation: int = 1

  @nn.compact
  def __call__(self, x: Array, seg: Array) -> Array:
    fmiddle = min(self.fin, self.fout)
    d = self.dilation
    if self.fin != self.fout:
      x_s = SPADE(self.fin, name="norm_s")(x, seg)
      x_s = make_conv(self.spectral, features=self.fout, kernel_size=1,
                      use_bias=False, name="conv_s")(x_s)
    else:
      x_s = x
    dx = leaky_relu(SPADE(self.fin, name="norm_0")(x, seg))
    dx = make_conv(self.spectral, features=fmiddle, kernel_size=3, padding=d,
                   dilation=d, name="conv_0")(dx)
    dx = leaky_relu(SPADE(fmiddle, name="norm_1")(dx, seg))
    dx = make_conv(self.spectral, features=self.fout, kernel_size=3, padding=d,
                   dilation=d, name="conv_1")(dx)
    return x_s + dx


class SPADEDecoder(nn.Module):
  """The official ``SPADEGenerator`` used as the decoder of
  :class:`SPADEDepthAwareGenerator`.

  ``ic`` is the bottleneck width (official hard-codes 256 = the official
  config's), ``cc`` = 4 compressed channels, ``oc`` = 64 output-block
  channels, as released. The segmentation map is ``cat(nearest-resized
  compress(feature), image)`` (``cc + 3`` channels); three SPADE blocks at
  2*ic run at the bottleneck resolution, then two x2 nearest upsamplings with
  ``up_0`` (2ic -> ic) and ``up_1`` (ic -> oc); ``conv_img`` (3x3) after a
  LeakyReLU and a sigmoid. Submodules ``compress``, ``fc``,
  ``G_middle_{0,1,2}``, ``up_0``, ``up_1``, ``conv_img``.
  """
  ic: int = 256
  cc: int = 4
  oc: int = 64
  num_channels: int = 3
  num_middle_blocks: int = 3

  @nn.compact
  def __call__(self, feature: Array, image: Array) -> Array:
    cp = Conv2d(self.cc, 3, padding=1, name="compress")(feature)
    seg = jnp.concatenate([ops.resize_nearest(cp, image.shape[1:3]), image], -1)
    x = Conv2d(2 * self.ic, 3, padding=1, name="fc")(feature)
    for i in range(self.num_middle_blocks):
      x = SPADEResnetBlock(2 * self.ic, 2 * self.ic, name=f"G_middle_{i}")(x, seg)
    x = ops.resize_nearest(x, (2 * x.shape[1], 2 * x.shape[2]))
    x = SPADEResnetBlock(2 * self.ic, self.ic, name="up_0")(x, seg)
    x = ops.resize_nearest(x, (2 * x.shape[1], 2 * x.shape[2]))
    x = SPADEResnetBlock(self.ic, self.oc, name="up_1")(x, seg)
    self.sow("intermediates", "up_out", x)
    x = Conv2d(self.num_channels, 3, padding=1, name="conv_img")(leaky_relu(x))
    return jax.nn.sigmoid(x)


class SPADEDepthAwareGenerator(_DepthAwareBase):
  """DaGAN's ``SPADEDepthAwareGenerator`` (official constructor arguments).

  Encoder, dense motion and depth-aware attention as
  :class:`DepthAwareGenerator`; the decoder (``decoder``, a
  :class:`SPADEDecoder`) takes the attended features and the deformed source
  image multiplied by the occlusion map (resized bilinearly to the image).
  ``num_bottleneck_blocks`` is accepted and unused (no ResBlock bottleneck),
  as in the official code. The released decoder upsamples twice, so
  ``num_down_blocks`` must be 2.
  """

  def setup_decoder(self) -> None:
    if self.num_down_blocks != 2:
      raise ValueError("SPADEDepthAwareGenerator's decoder upsamples x4: "
                       f"num_down_blocks must be 2, got {self.num_down_blocks}")
    if self.dense_motion_params is None:
      raise ValueError("SPADEDepthAwareGenerator needs dense_motion_params")
    ic = _channels(self.block_expansion, self.max_features, self.num_down_blocks)
    self.decoder = SPADEDecoder(ic=ic, num_channels=self.num_channels)

  def decode_features(self, out, output, occlusion_map, source_image):
    deformed = output["deformed"]
    if occlusion_map is not None:
      if occlusion_map.shape[1:3] != deformed.shape[1:3]:
        occlusion_map = ops.resize_bilinear(occlusion_map, deformed.shape[1:3])
      deformed = deformed * occlusion_map
    return self.decoder(out, deformed)


GENERATORS = {"DepthAwareGenerator": DepthAwareGenerator,
              "SPADEDepthAwareGenerator": SPADEDepthAwareGenerator,
              "OcclusionAwareGenerator": OcclusionAwareGenerator}
