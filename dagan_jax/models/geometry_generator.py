"""DaGAN++'s geometry-enhanced multi-layer generator (TPAMI 2023, Sec. 3.3, 3.5).

Hong et al., "DaGAN++: Depth-Aware Generative Adversarial Network for
Talking Head Video Generation" (arXiv 2305.06225). No official DaGAN++ code
exists: this module follows the paper's text and Figs. 4-5, reusing DaGAN's
layers (``models/layers.py``) and FOMM's dense motion network.

Pipeline of :class:`GeometryEnhancedGenerator` (scale ``i`` = 0 is the
full-resolution feature map, ``i = num_down_blocks`` the coarsest):

1. **Feature encoder** E_I (Sec. 3.5, Fig. 5c): a 7x7 conv block ``first``
   then ``num_down_blocks`` (3) DownBlocks (3x3 conv + BN + ReLU + 2x2 average
   pooling, Fig. 5d) give ``num_down_blocks + 1`` (4) feature maps F_e^i with
   ``min(max_features, block_expansion * 2**i)`` channels (64, 128, 256, 512
   at the paper's settings; 256, 128, 64, 32 pixels wide for 256x256 frames).
2. **Depth encoder** E_d (Fig. 5b): the same structure (``src_first``,
   ``src_down_blocks_i``) on the 1-channel source depth map, giving F_depth^i
   of the same shapes ("identical to E_I", Sec. 3.5).
3. **Motion** (Eq. 10-11): :class:`~dagan_jax.models.dense_motion.DenseMotionNetwork`
   gives the dense motion T_{S<-D} and the occlusion map M.
4. **Feature warping** (Eq. 12): F_w^i = M x W_p(F_e^i, T_{S<-D}) at every
   scale, with T and M resized bilinearly to the scale (as DaGAN's
   ``deform_input`` does for its single scale).
5. **Cross-modal attention** (Eq. 13), :class:`CrossModalAttention`:
   F_en^i = softmax(F_q^i (F_k^i)^T) F_v^i + F_w^i, the query from the warped
   appearance F_w^i and the key and value from the depth features F_depth^i
   through 1x1 convs, over the ``h*w`` pixels of the scale. It runs through
   :func:`dagan_jax.ops.attention.attention`, which is exact and
   memory-linear: at the 256x256 scale the (65536, 65536) matrix is never
   formed (17 GB per sample in float32). ``attention_layers`` selects where
   (Table V ablations): ``'all'`` every scale (GMG, DaGAN++), ``'bottleneck'``
   only the coarsest (CAM, "as done in DaGAN"), ``'none'`` nowhere
   (F_en^i = F_w^i; the baseline).
6. **Decoder** (Sec. 3.3.3, Fig. 4b, Fig. 5e): ``num_bottleneck_blocks``
   ResBlocks on F_en at the coarsest scale give F_d^1; then, for each finer
   scale, an UpBlock (nearest x2, 3x3 conv + BN + ReLU), concatenation
   ``[up, F_en^i]`` on channels (the geometry-enhanced skip connection) and a
   conv block back to the scale's width give F_d^{i+1}; a final 7x7 conv and
   a sigmoid give the image.

Where the paper is silent or ambiguous, and what we chose:

* **First block.** "Three down blocks producing four scales" (Sec. 3.5): the
  fourth (finest) scale is the output of a full-resolution 7x7 conv block
  (``first``, as FOMM's and DaGAN's generators), not the raw image -- a
  3-channel map would make a useless attention query.
* **Projections.** Sec. 3.3.2 calls them "linear projection[s]" by 1x1
  convs, so by default there is no ReLU (DaGAN's code had one on q, k, v):
  ``attention_relu=False``.
* **Query/key width.** Not given; we use ``C // 8`` like DaGAN
  (``attention_qk_divisor=8``, at least 1). The value keeps ``C`` channels
  (the residual of Eq. 13 needs it).
* **Gamma.** Eq. 13 adds the attention output with no learnable scale;
  DaGAN's code had ``gamma`` initialised at 0. Default: none
  (``attention_gamma=False``); with ``True`` a zero-initialised ``gamma``
  multiplies the attention output as in DaGAN.
* **Logit scale.** Eq. 13 has no 1/sqrt(d): ``attention_scale=1.0``.
* **Key bias.** The key conv has no bias: ``q . (k + b)`` shifts every logit
  of a query by the same ``q . b``, which the softmax cancels, so such a bias
  would be a parameter that provably never receives a gradient.
* **Occlusion map.** Applied at every scale (Eq. 12 writes it for every i).
* **Decoder conv.** "via a convolutional layer" (Sec. 3.3.3): a 3x3
  conv + BN + ReLU block (the paper's "conv block" of Fig. 5d), named
  ``fuse_blocks_j``.
* **Decoder widths.** UpBlock j outputs the width of the scale it reaches
  (so the concatenation has twice that width), as the encoder mirror.
* **Baseline without depth.** ``use_source_depth=False`` builds no depth
  encoder and ignores ``source_depth``; it requires ``attention_layers =
  'none'``. Conversely, attention requires the depth encoder, and an unused
  depth encoder (``use_source_depth=True`` with ``'none'``) is refused since
  its parameters would never be trained.

Call signature and outputs are those of DaGAN's generators
(:mod:`dagan_jax.models.generator`): ``__call__(source_image, kp_driving,
kp_source, source_depth=None, driving_depth=None)``; the dict holds ``mask``,
``sparse_deformed``, ``occlusion_map``, ``deformation``, ``deformed`` (when
there is a dense motion network) and ``prediction`` ``(B, H, W, C)`` in
(0, 1). ``driving_depth`` is accepted and unused (as in DaGAN). Intermediates
sown: ``enc_out_i``, ``depth_enc_out_i``, ``warped_i`` (F_w^i),
``enhanced_i`` (F_en^i), ``bottleneck_out``, ``dec_out_j``.

Submodules: ``dense_motion_network``, ``first``, ``down_blocks_i``,
``src_first``, ``src_down_blocks_i``, ``attention_i`` (``query_conv``,
``key_conv``, ``value_conv``, optional ``gamma``), ``bottleneck_r{r}``,
``up_blocks_j``, ``fuse_blocks_j``, ``final``.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from dagan_jax import ops
from dagan_jax.models.dense_motion import DenseMotionNetwork
from dagan_jax.models.generator import deform_input
from dagan_jax.models.layers import (Conv2d, DownBlock2d, ResBlock2d,
                                     SameBlock2d, UpBlock2d)

Array = jax.Array
KP = dict[str, Array]
AttentionFn = Callable[[Array, Array, Array], Array]
BlockSize = int | tuple[int, int] | None

#: Values of ``attention_layers`` (Table V: GMG, CAM, baseline).
ATTENTION_LAYERS = ("all", "bottleneck", "none")


def _block_size(value: Any) -> BlockSize:
  """A config's block size (int, list/tuple of two ints, or None) as the
  hashable form :func:`dagan_jax.ops.attention.attention` takes."""
  if value is None or isinstance(value, int):
    return value
  bq, bk = value
  return (int(bq), int(bk))


def _channels(block_expansion: int, max_features: int, i: int) -> int:
  """Width of encoder scale ``i`` (0 = full resolution)."""
  return min(max_features, block_expansion * (2 ** i))


class CrossModalAttention(nn.Module):
  """Cross-modal geometry-guided attention (DaGAN++ Sec. 3.3.2, Eq. 13).

  ``__call__(appearance, depth)`` with the warped appearance features F_w
  ``(B, h, w, C)`` and the depth features F_depth ``(B, h, w, C_d)``:

      q = W_q F_w  (C -> d),  k = W_k F_depth  (C_d -> d, no bias),
      v = W_v F_depth  (C_d -> C),
      F_en = gamma * softmax(scale * q k^T) v + F_w   (gamma = 1 unless learned)

  over the ``N = h * w`` pixels in row-major order, ``d = max(1, C //
  qk_divisor)``. See the module docstring for the choices (no ReLU, no gamma,
  no 1/sqrt(d), no key bias by default). The attention itself is
  ``attention_fn(q, k, v)`` if given, else
  :func:`dagan_jax.ops.attention.attention` with ``implementation`` and
  ``block_size`` (``'auto'``: the naive form up to 4096 pixels, the exact
  memory-linear blockwise form above).
  """
  qk_divisor: int = 8
  projection_relu: bool = False
  learnable_gamma: bool = False
  scale: float = 1.0
  implementation: str = "auto"
  block_size: BlockSize = None
  attention_fn: AttentionFn | None = None

  @nn.compact
  def __call__(self, appearance: Array, depth: Array) -> Array:
    b, h, w, c = appearance.shape
    if depth.shape[:3] != (b, h, w):
      raise ValueError(f"CrossModalAttention: appearance {appearance.shape} "
                       f"and depth {depth.shape} features differ in size")
    d = max(1, c // self.qk_divisor)
    act = nn.relu if self.projection_relu else (lambda x: x)
    q = act(Conv2d(d, 1, name="query_conv")(appearance))
    k = act(Conv2d(d, 1, use_bias=False, name="key_conv")(depth))
    v = act(Conv2d(c, 1, name="value_conv")(depth))
    n = h * w
    q, k, v = q.reshape(b, n, d), k.reshape(b, n, d), v.reshape(b, n, c)
    if self.attention_fn is not None:
      out = self.attention_fn(q, k, v)
    else:
      from dagan_jax.ops.attention import attention
      out = attention(q, k, v, scale=self.scale, block_size=self.block_size,
                      implementation=self.implementation)  # type: ignore[arg-type]
    out = out.reshape(b, h, w, c)
    if self.learnable_gamma:
      out = self.param("gamma", nn.initializers.zeros, (1,)) * out
    return out + appearance


class GeometryEnhancedGenerator(nn.Module):
  """DaGAN++'s generator (see the module docstring).

  Attributes:
    num_channels, num_kp, block_expansion, max_features: as DaGAN's
      generators (``common_params`` + ``generator_params``).
    num_down_blocks: DownBlocks of both encoders (paper: 3 -> 4 scales).
    num_bottleneck_blocks: ResBlocks at the coarsest scale (paper's
      settings: 6, the official DaGAN/FOMM value).
    estimate_occlusion_map: the dense motion network predicts M (Eq. 11-12).
    dense_motion_params: kwargs of :class:`DenseMotionNetwork`; None: no
      motion (F_w = F_e, no ``deformation``/``deformed`` outputs).
    estimate_jacobian: accepted for config compatibility (the keypoints
      carry their Jacobians; unused here, as in DaGAN).
    attention_layers: ``'all'``, ``'bottleneck'`` or ``'none'``.
    use_source_depth: build the depth encoder and read ``source_depth``.
    attention_qk_divisor, attention_relu, attention_gamma, attention_scale:
      :class:`CrossModalAttention` options (defaults: the paper's Eq. 13).
    attention_block_size: blockwise tile sizes (int or (query, key)).
    attention_implementation: see :func:`dagan_jax.ops.attention.attention`.
    attention_fn: replaces the attention function (tests, benchmarks).
  """
  num_channels: int
  num_kp: int
  block_expansion: int
  max_features: int
  num_down_blocks: int = 3
  num_bottleneck_blocks: int = 6
  estimate_occlusion_map: bool = True
  dense_motion_params: Any = None
  estimate_jacobian: bool = False
  attention_layers: str = "all"
  use_source_depth: bool = True
  attention_qk_divisor: int = 8
  attention_relu: bool = False
  attention_gamma: bool = False
  attention_scale: float = 1.0
  attention_block_size: BlockSize = None
  attention_implementation: str = "auto"
  attention_fn: AttentionFn | None = None

  #: ``generator_params`` keys this generator accepts beyond DaGAN's.
  EXTRA_CONFIG_KEYS: ClassVar[frozenset[str]] = frozenset({
      "attention_layers", "use_source_depth", "attention_qk_divisor",
      "attention_relu", "attention_gamma", "attention_scale",
      "attention_block_size"})

  def attended_scales(self) -> tuple[int, ...]:
    """Encoder scales (0 = finest) that get cross-modal attention."""
    nd = self.num_down_blocks
    return {"all": tuple(range(nd + 1)), "bottleneck": (nd,),
            "none": ()}[self.attention_layers]

  def _check(self, source_image: Array, source_depth: Array | None) -> None:
    if self.attention_layers not in ATTENTION_LAYERS:
      raise ValueError(f"attention_layers is {self.attention_layers!r}; "
                       f"expected one of {ATTENTION_LAYERS}")
    if self.attention_layers != "none" and not self.use_source_depth:
      raise ValueError("cross-modal attention needs the depth encoder: "
                       "attention_layers != 'none' requires use_source_depth")
    if self.attention_layers == "none" and self.use_source_depth:
      raise ValueError("use_source_depth=True with attention_layers='none' "
                       "would build a depth encoder that nothing reads")
    if self.use_source_depth and source_depth is None:
      raise ValueError("GeometryEnhancedGenerator(use_source_depth=True) "
                       "needs source_depth (B, H, W, 1)")
    h, w = source_image.shape[1:3]
    f = 2 ** self.num_down_blocks
    if h % f or w % f:
      raise ValueError(f"frame size {(h, w)} must be divisible by "
                       f"2**num_down_blocks = {f}")

  def _encode(self, x: Array, prefix: str) -> list[Array]:
    """Feature / depth encoder (Fig. 5b-c): the maps of every scale."""
    be, mf = self.block_expansion, self.max_features
    feats = [SameBlock2d(be, 7, 3, name=f"{prefix}first")(x)]
    for i in range(self.num_down_blocks):
      feats.append(DownBlock2d(_channels(be, mf, i + 1), 3, 1,
                               name=f"{prefix}down_blocks_{i}")(feats[-1]))
    return feats

  def __call__(self, source_image: Array, kp_driving: KP, kp_source: KP,
               source_depth: Array | None = None,
               driving_depth: Array | None = None) -> dict[str, Array]:
    del driving_depth
    return self._run(source_image, source_depth, None, kp_driving, kp_source)

  def encode_source(self, source_image: Array, source_depth: Array | None = None
                    ) -> dict[str, Any]:
    """Both encoders' maps of every scale, ``{'enc': [F_e^i], 'depth':
    [F_depth^i] or None}``: everything that does not depend on the driving
    frame, so that animation encodes the source once per video (linen
    ``method='encode_source'``)."""
    return self._run(source_image, source_depth, None, None, None)

  def decode(self, features: dict[str, Any], source_image: Array,
             kp_driving: KP, kp_source: KP, source_depth: Array | None = None,
             driving_depth: Array | None = None) -> dict[str, Array]:
    """The output dict from :meth:`encode_source` 's features and one batch
    of driving keypoints (``decode(encode_source(s, d), s, ...)`` equals
    ``__call__(s, ..., d)``)."""
    del source_depth, driving_depth  # encoded already / unused
    return self._run(source_image, None, features, kp_driving, kp_source)

  @nn.compact
  def _run(self, source_image: Array, source_depth: Array | None,
           features: dict[str, Any] | None, kp_driving: KP | None,
           kp_source: KP | None) -> dict[str, Any]:
    """The whole generator (one compact method, so that every entry point
    creates the same submodules): encodes unless ``features`` are given,
    stops after encoding when ``kp_driving`` is None."""
    be, mf, nd = self.block_expansion, self.max_features, self.num_down_blocks
    if features is None:
      self._check(source_image, source_depth)
      enc = self._encode(source_image, "")
      for i, f in enumerate(enc):
        self.sow("intermediates", f"enc_out_{i}", f)
      depth_feats = None
      if self.use_source_depth:
        depth_feats = self._encode(source_depth.astype(source_image.dtype), "src_")
        for i, f in enumerate(depth_feats):
          self.sow("intermediates", f"depth_enc_out_{i}", f)
      if kp_driving is None:
        return {"enc": enc, "depth": depth_feats}
    else:
      enc, depth_feats = list(features["enc"]), features["depth"]
      if len(enc) != nd + 1 or (self.use_source_depth and depth_feats is None):
        raise ValueError(
            f"GeometryEnhancedGenerator.decode: features must hold {nd + 1} "
            f"encoder maps{' and the depth maps' if self.use_source_depth else ''}"
            f" (from encode_source); got {len(enc)} maps, depth "
            f"{'missing' if depth_feats is None else 'present'}")

    output: dict[str, Array] = {}
    deformation = occlusion_map = None
    if self.dense_motion_params is not None:
      dm = DenseMotionNetwork(num_kp=self.num_kp, num_channels=self.num_channels,
                              estimate_occlusion_map=self.estimate_occlusion_map,
                              name="dense_motion_network",
                              **dict(self.dense_motion_params))
      dense = dm(source_image, kp_driving, kp_source)
      output["mask"] = dense["mask"]
      output["sparse_deformed"] = dense["sparse_deformed"]
      deformation = dense["deformation"]
      output["deformation"] = deformation
      if "occlusion_map" in dense:
        occlusion_map = dense["occlusion_map"]
        output["occlusion_map"] = occlusion_map
      output["deformed"] = deform_input(source_image, deformation)

    attended = self.attended_scales()
    enhanced = []
    for i, feat in enumerate(enc):
      # Eq. 12: F_w^i = M x W_p(F_e^i, T_{S<-D}).
      if deformation is not None:
        feat = deform_input(feat, deformation)
      if occlusion_map is not None:
        occ = occlusion_map
        if occ.shape[1:3] != feat.shape[1:3]:
          occ = ops.resize_bilinear(occ, feat.shape[1:3])
        feat = feat * occ
      self.sow("intermediates", f"warped_{i}", feat)
      if i in attended:
        # Eq. 13, with the depth features of the same scale.
        feat = CrossModalAttention(
            qk_divisor=self.attention_qk_divisor,
            projection_relu=self.attention_relu,
            learnable_gamma=self.attention_gamma, scale=self.attention_scale,
            implementation=self.attention_implementation,
            block_size=_block_size(self.attention_block_size),
            attention_fn=self.attention_fn,
            name=f"attention_{i}")(feat, depth_feats[i])
      self.sow("intermediates", f"enhanced_{i}", feat)
      enhanced.append(feat)

    # Decoder (Sec. 3.3.3, Fig. 4b, 5e).
    out = enhanced[nd]
    for r in range(self.num_bottleneck_blocks):
      out = ResBlock2d(3, 1, name=f"bottleneck_r{r}")(out)
    self.sow("intermediates", "bottleneck_out", out)
    for j in range(nd):
      level = nd - 1 - j
      width = _channels(be, mf, level)
      out = UpBlock2d(width, 3, 1, name=f"up_blocks_{j}")(out)
      out = jnp.concatenate([out, enhanced[level]], axis=-1)
      out = SameBlock2d(width, 3, 1, name=f"fuse_blocks_{j}")(out)
      self.sow("intermediates", f"dec_out_{j}", out)
    out = Conv2d(self.num_channels, 7, padding=3, name="final")(out)
    output["prediction"] = jax.nn.sigmoid(out)
    return output


GENERATORS = {"GeometryEnhancedGenerator": GeometryEnhancedGenerator}

