"""IP_LAP's audio-to-landmark generator (Zhong et al., "Identity-Preserving
Talking Face Generation with Landmark and Appearance Priors", CVPR 2023;
official ``models/landmark_generator.py``, class ``Landmark_generator``).

From a window of ``T`` frames (official T = 5) it predicts the *content*
landmarks (17 jaw + 40 lip points) of every frame, given

* the mel chunk of each frame (80 mel bins x 16 steps),
* the *pose* landmarks of each frame (74 points: upper face oval, brows,
  nose, eyes; taken from the template video),
* ``Nl`` reference faces (official 15), each as its pose and content
  landmarks (74 + 57 = 131 points).

Pipeline (the official forward, step by step):

1. three convolutional encoders, each ending in a 512-vector with a tanh:
   ``mel_encoder`` (2-D convs over the mel chunk), ``pose_encoder`` (1-D
   convs over the 74 points, x/y as the two input channels) and
   ``ref_encoder`` (1-D convs over the 131 reference points); every block is
   conv -> BatchNorm (-> + input for the residual blocks) -> ReLU or tanh;
2. one LayerNorm (``Norm``) shared by the three embeddings;
3. ``fusion_transformer``: tokens ``[ref + m3 ; audio + PE + m2 ; pose + PE
   + m1]`` (``m*`` rows of a learned modality embedding, PE the sinusoidal
   table of the first ``T`` positions; the references get no position),
   dropout, then ``nlayers`` post-LN ``TransformerEncoderLayer`` s (ReLU
   FFN, no final norm);
4. ``mouse_keypoint_map`` on the audio tokens (40 lip points) and
   ``jaw_keypoint_map`` on the pose tokens (17 jaw points); each linear
   output is (x, y) pairs, point after point.

Layouts (ours; NHWC as everywhere in :mod:`dagan_jax.models`):

=================  ========================  ==============================
argument           ours                      official
=================  ========================  ==============================
mels               (B, T, 80, 16, 1)         (B, T, 1, 80, 16)
pose               (B, T, 74, 2)             (B, T, 2, 74)
ref_pose           (B, Nl, 74, 2)            (B, Nl, 2, 74)
ref_content        (B, Nl, 57, 2)            (B, Nl, 2, 57)
output             (B, T, 57, 2)             (B*T, 2, 57)
=================  ========================  ==============================

Mel chunks are (H = mel bin, W = time step, C = 1): the official
``(1, 80, 16)`` chunk is channel, mel, time, so strides written ``(3, 1)``
in the official code stride the mel axis. Landmarks are (points, xy) with
x first, normalised to the face crop, points in IP_LAP's full-face order
(:mod:`dagan_jax.face.ip_lap_landmarks`; pose then content; content = 17
jaw then 40 lip). :func:`from_official_inputs` and
:func:`to_official_output` convert from / to the official layouts.

The official 1-D blocks (``nn.Conv1d`` + ``BatchNorm1d``) are run as 2-D
convolutions over a height-1 map (activations ``(N, 1, points, C)``,
kernels ``(1, k, in, out)``), so every convolution goes through
:mod:`dagan_jax.compute` and the layer library's exact inference rewrites
(BatchNorm folding, :func:`~dagan_jax.models.layers.conv_bn`) apply to
them too; BatchNorm statistics over (N, 1, L) equal ``BatchNorm1d``'s over
(N, L).

Quirks of the official code that are followed:

* The sinusoidal table, the modality embedding, the LayerNorm and the
  encoders are all hard-wired to 512 features; ``d_model`` must be 512.
* The modality ids are built with the constructor's ``T``, so the official
  module only runs on windows of exactly ``T`` frames; so does this one
  (``ValueError`` otherwise).
* Rows 1, 2, 3 of the modality embedding mark pose, audio and reference
  tokens; row 0 is the (never used) padding row.
* The tables ``position_v.pe`` and ``position_a.pe`` are buffers of the
  official checkpoint; here the first ``T`` rows are recomputed
  (:func:`positional_table`) and the converter checks the stored ones
  against them.

Train / eval: BatchNorm trains when ``'batch_stats'`` is mutable (see
:mod:`dagan_jax.models.layers`); dropout (input tokens, attention weights,
after attention, inside and after the FFN, as torch's encoder layer) is on
when ``deterministic=False`` (rng stream ``'dropout'``).

Intermediates sown (collection ``'intermediates'``), with the names of the
parity fixture's ``lg/`` group: at the top ``mel_embedding``,
``pose_embedding`` ``(B*T, 512)``, ``ref_embedding`` ``(B*Nl, 512)`` (encoder
outputs), the same after the LayerNorm with suffix ``_ln``,
``lip_head_out`` ``(B, T, 80)``, ``jaw_head_out`` ``(B, T, 34)``; in
``fusion_transformer``: ``input_tokens`` ``(B, Nl + 2T, 512)``; in
``fusion_transformer/transformer_encoder``: ``transformer_layer{i}_out``.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dagan_jax import compute
from dagan_jax.models.layers import BatchNorm, Conv2d, conv_bn
from dagan_jax.ops.attention import naive_attention

Array = jax.Array

#: Width of the three embeddings, the positional table, the modality
#: embedding and the shared LayerNorm (hard-wired in the official code).
EMBED_DIM = 512
#: Rows of the official sinusoidal tables (``max_len``).
MAX_POSITIONS = 512
#: Pose and content points per face (the counts of
#: :mod:`dagan_jax.face.ip_lap_landmarks`, restated here so that the models
#: package does not import the face package).
NUM_POSE = 74
NUM_CONTENT = 57
#: Modality ids (row 0 of the embedding is its padding row).
MODALITY_POSE, MODALITY_AUDIO, MODALITY_REFERENCE = 1, 2, 3
NUM_MODALITIES = 4
JAW_POINTS = 17
LIP_POINTS = NUM_CONTENT - JAW_POINTS  # 40
#: torch's LayerNorm and BatchNorm epsilon.
NORM_EPS = 1e-5

# Encoder specs, one row per official block:
# (out channels, kernel, stride, padding, residual, activation).
# 2-D rows are (H = mel, W = time) pairs as the official (kh, kw) order.
MEL_ENCODER = (
    (32, 3, 1, 1, False, "relu"),
    (32, 3, 1, 1, True, "relu"),
    (32, 3, 1, 1, True, "relu"),
    (64, 3, (3, 1), 1, False, "relu"),
    (64, 3, 1, 1, True, "relu"),
    (64, 3, 1, 1, True, "relu"),
    (128, 3, 3, 1, False, "relu"),
    (128, 3, 1, 1, True, "relu"),
    (128, 3, 1, 1, True, "relu"),
    (256, 3, (3, 2), 1, False, "relu"),
    (256, 3, 1, 1, True, "relu"),
    (512, 3, 1, 0, False, "relu"),
    (512, 1, 1, 0, False, "tanh"),
)
# 1-D rows: (out channels, kernel, stride, padding, residual, activation)
# along the points axis. 131 points -> 66 -> 33 -> 17 -> 9 -> 5 -> 3 -> 1.
REF_ENCODER = (
    (4, 3, 1, 1, False, "relu"),
    (8, 3, 2, 1, False, "relu"),
    (8, 3, 1, 1, True, "relu"),
    (8, 3, 1, 1, True, "relu"),
    (16, 3, 2, 1, False, "relu"),
    (16, 3, 1, 1, True, "relu"),
    (16, 3, 1, 1, True, "relu"),
    (32, 3, 2, 1, False, "relu"),
    (32, 3, 1, 1, True, "relu"),
    (32, 3, 1, 1, True, "relu"),
    (64, 3, 2, 1, False, "relu"),
    (64, 3, 1, 1, True, "relu"),
    (64, 3, 1, 1, True, "relu"),
    (128, 3, 2, 1, False, "relu"),
    (128, 3, 1, 1, True, "relu"),
    (128, 3, 1, 1, True, "relu"),
    (256, 3, 2, 1, False, "relu"),
    (256, 3, 1, 1, True, "relu"),
    (512, 3, 1, 0, False, "relu"),
    (512, 1, 1, 0, False, "tanh"),
)
# 74 points -> 74 -> 37 -> 19 -> 10 -> 5 -> 3 -> 1. Unlike the reference
# encoder, its last (1x1, tanh) block is residual.
POSE_ENCODER = (
    (4, 3, 1, 1, False, "relu"),
    (8, 3, 1, 1, False, "relu"),
    (8, 3, 1, 1, True, "relu"),
    (8, 3, 1, 1, True, "relu"),
    (16, 3, 2, 1, False, "relu"),
    (16, 3, 1, 1, True, "relu"),
    (16, 3, 1, 1, True, "relu"),
    (32, 3, 2, 1, False, "relu"),
    (32, 3, 1, 1, True, "relu"),
    (32, 3, 1, 1, True, "relu"),
    (64, 3, 2, 1, False, "relu"),
    (64, 3, 1, 1, True, "relu"),
    (64, 3, 1, 1, True, "relu"),
    (128, 3, 2, 1, False, "relu"),
    (128, 3, 1, 1, True, "relu"),
    (128, 3, 1, 1, True, "relu"),
    (256, 3, 2, 1, False, "relu"),
    (256, 3, 1, 1, True, "relu"),
    (256, 3, 1, 1, True, "relu"),
    (512, 3, 1, 0, False, "relu"),
    (512, 1, 1, 0, True, "tanh"),
)
#: Official attribute name -> (spec, whether its convs are 1-D).
ENCODERS = {"mel_encoder": (MEL_ENCODER, False),
            "ref_encoder": (REF_ENCODER, True),
            "pose_encoder": (POSE_ENCODER, True)}

# The official ``weight_init`` gives every nn.Linear (the heads, the FFN and
# the attention's out_proj) xavier_normal_ weights and zero biases; the
# attention's fused in_proj_weight keeps torch's xavier_uniform_ over the
# (3d, d) matrix, i.e. U(+-sqrt(6 / 4d)) = variance_scaling(0.5, fan_avg) on
# each (d, d) third.
_xavier_normal = nn.initializers.variance_scaling(1.0, "fan_avg", "normal")
_in_proj_init = nn.initializers.variance_scaling(0.5, "fan_avg", "uniform")


def _modality_init(key, shape, dtype=jnp.float32):
  """nn.Embedding's init with padding_idx=0: N(0, 1), row 0 zero."""
  return jax.random.normal(key, shape, dtype).at[0].set(0)


def _pair(v) -> tuple[int, int]:
  return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def positional_table(length: int, d_model: int = EMBED_DIM) -> np.ndarray:
  """The first ``length`` rows of the official ``PositionalEmbedding.pe``
  (float32 ``(length, d_model)``): column ``2i`` is ``sin(p * w_i)``,
  ``2i + 1`` is ``cos(p * w_i)``, ``w_i = exp(-2i ln(10000) / d_model)``.

  The frequencies and their products with the positions are rounded to
  float32 as torch computes them; sin and cos are taken in float64 and
  rounded once. torch's float32 sin/cos/exp may differ in the last bits:
  1e-7 on the first positions, up to ~2e-5 near position 511 (the
  converter's check allows for that).
  """
  if length > MAX_POSITIONS:
    raise ValueError(f"IP_LAP's positional table has {MAX_POSITIONS} rows; "
                     f"asked for {length}")
  exponent = (np.arange(0, d_model, 2, dtype=np.float32)
              * np.float32(-(math.log(10000.0) / d_model)))
  freq = np.exp(exponent.astype(np.float64)).astype(np.float32)
  arg = (np.arange(length, dtype=np.float32)[:, None] * freq[None, :]
         ).astype(np.float64)
  table = np.zeros((length, d_model), np.float32)
  table[:, 0::2] = np.sin(arg)
  table[:, 1::2] = np.cos(arg)
  return table


class LayerNorm(nn.Module):
  """``torch.nn.LayerNorm(d)`` over the last axis: two-pass mean and biased
  variance (through :mod:`dagan_jax.compute`), eps 1e-5. Params ``scale``,
  ``bias`` (torch ``weight``, ``bias``)."""
  epsilon: float = NORM_EPS

  @nn.compact
  def __call__(self, x: Array) -> Array:
    d, last = x.shape[-1], x.ndim - 1
    per_row = lambda v: compute.block_broadcast(v, x.shape, last, x.ndim)  # noqa: E731
    centred = x - per_row(compute.block_mean(x, last, x.ndim))
    var = compute.block_mean(jnp.square(centred), last, x.ndim)
    y = centred * per_row(jax.lax.rsqrt(var + self.epsilon))
    scale = self.param("scale", nn.initializers.ones, (d,))
    bias = self.param("bias", nn.initializers.zeros, (d,))
    return y * scale + bias


class ConvBlock(nn.Module):
  """The official ``Conv2d`` / ``Conv1d`` block: conv -> BatchNorm
  (-> + input when ``residual``) -> ReLU or tanh, on NHWC input (1-D blocks:
  height 1, ``kernel_size=(1, k)``).

  Submodules ``conv_block_0`` (:class:`~dagan_jax.models.layers.Conv2d`)
  and ``conv_block_1`` (:class:`~dagan_jax.models.layers.BatchNorm`), the
  official ``conv_block`` Sequential.
  """
  features: int
  kernel_size: tuple[int, int]
  stride: tuple[int, int] = (1, 1)
  padding: tuple[int, int] = (0, 0)
  residual: bool = False
  act: str = "relu"
  precision: Any = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    if self.act not in ("relu", "tanh"):
      raise ValueError(f"ConvBlock: activation {self.act!r}; expected "
                       "'relu' or 'tanh'")
    conv = Conv2d(self.features, self.kernel_size, stride=self.stride,
                  padding=self.padding, precision=self.precision,
                  name="conv_block_0")
    norm = BatchNorm(epsilon=NORM_EPS, name="conv_block_1")
    out = conv_bn(self, x, conv, norm)
    if self.residual:
      out = out + x
    return jnp.tanh(out) if self.act == "tanh" else nn.relu(out)


def _encoder_blocks(name: str, precision: Any) -> list[ConvBlock]:
  """The blocks ``{name}_{i}`` of one official encoder (unbound; created
  inside the caller's compact method)."""
  spec, one_d = ENCODERS[name]
  blocks = []
  for i, (cout, k, s, p, residual, act) in enumerate(spec):
    if one_d:
      kernel, stride, padding = (1, k), (1, s), (0, p)
    else:
      kernel, stride, padding = _pair(k), _pair(s), _pair(p)
    blocks.append(ConvBlock(cout, kernel, stride, padding, residual, act,
                            precision, name=f"{name}_{i}"))
  return blocks


class SelfAttention(nn.Module):
  """torch's ``nn.MultiheadAttention`` as self-attention (batch first).

  The fused ``in_proj_weight`` ``(3d, d)`` / ``in_proj_bias`` are held as
  three Dense layers ``q_proj``, ``k_proj``, ``v_proj`` (its rows 0:d, d:2d,
  2d:3d; the names torch itself uses when the projections are separate),
  then ``out_proj``. Heads are contiguous slices of ``d // nhead`` features;
  logits scaled by ``1/sqrt(d // nhead)``; ``dropout`` on the attention
  weights in training.
  """
  d_model: int
  nhead: int
  dropout: float = 0.0
  precision: Any = None

  @nn.compact
  def __call__(self, x: Array, *, deterministic: bool = True) -> Array:
    b, n, d = x.shape
    if d % self.nhead:
      raise ValueError(f"d_model {d} is not divisible by nhead {self.nhead}")
    dh = d // self.nhead

    def project(name: str, init) -> Array:
      y = nn.Dense(self.d_model, kernel_init=init,
                   bias_init=nn.initializers.zeros, precision=self.precision,
                   name=name)(x)
      # (B, N, h, dh) -> (B*h, N, dh): one attention per sample and head.
      return y.reshape(b, n, self.nhead, dh).transpose(0, 2, 1, 3).reshape(
          b * self.nhead, n, dh)

    q = project("q_proj", _in_proj_init)
    k = project("k_proj", _in_proj_init)
    v = project("v_proj", _in_proj_init)
    scale = 1.0 / math.sqrt(dh)
    if deterministic or self.dropout == 0:
      out = naive_attention(q, k, v, scale=scale, precision=self.precision)
    else:
      logits = scale * jnp.einsum("bnd,bmd->bnm", q, k,
                                  precision=self.precision)
      weights = nn.Dropout(self.dropout)(jax.nn.softmax(logits, axis=-1),
                                         deterministic=False)
      out = jnp.einsum("bnm,bmd->bnd", weights, v, precision=self.precision)
    out = out.reshape(b, self.nhead, n, dh).transpose(0, 2, 1, 3).reshape(
        b, n, d)
    return nn.Dense(self.d_model, kernel_init=_xavier_normal,
                    bias_init=nn.initializers.zeros, precision=self.precision,
                    name="out_proj")(out)


class TransformerEncoderLayer(nn.Module):
  """torch's ``TransformerEncoderLayer`` with its defaults as IP_LAP uses
  it: post-LN (``norm_first=False``), ReLU, eps 1e-5, batch first::

    x = norm1(x + dropout1(self_attn(x)))
    x = norm2(x + dropout2(linear2(dropout(relu(linear1(x))))))

  Submodules ``self_attn``, ``linear1``, ``linear2``, ``norm1``, ``norm2``.
  """
  d_model: int
  nhead: int
  dim_feedforward: int
  dropout: float = 0.1
  precision: Any = None

  @nn.compact
  def __call__(self, x: Array, *, deterministic: bool = True) -> Array:
    dense = lambda f, name: nn.Dense(  # noqa: E731
        f, kernel_init=_xavier_normal, bias_init=nn.initializers.zeros,
        precision=self.precision, name=name)
    drop = lambda y: nn.Dropout(self.dropout)(y, deterministic=deterministic)  # noqa: E731
    attn = SelfAttention(self.d_model, self.nhead, self.dropout,
                         self.precision, name="self_attn")
    x = LayerNorm(name="norm1")(x + drop(attn(x, deterministic=deterministic)))
    h = drop(nn.relu(dense(self.dim_feedforward, "linear1")(x)))
    return LayerNorm(name="norm2")(x + drop(dense(self.d_model, "linear2")(h)))


class TransformerEncoder(nn.Module):
  """torch's ``TransformerEncoder`` without a final norm: ``nlayers``
  :class:`TransformerEncoderLayer` s ``layers_{i}`` (official
  ``layers.{i}``); sows each layer's output as ``transformer_layer{i}_out``."""
  d_model: int
  nlayers: int
  nhead: int
  dim_feedforward: int
  dropout: float = 0.1
  precision: Any = None

  @nn.compact
  def __call__(self, x: Array, *, deterministic: bool = True) -> Array:
    for i in range(self.nlayers):
      x = TransformerEncoderLayer(self.d_model, self.nhead, self.dim_feedforward,
                                  self.dropout, self.precision,
                                  name=f"layers_{i}")(x, deterministic=deterministic)
      self.sow("intermediates", f"transformer_layer{i}_out", x)
    return x


class FusionTransformerEncoder(nn.Module):
  """The official ``Fusion_transformer_encoder``: tokens ``[ref + m3 ;
  audio + PE + m2 ; pose + PE + m1]`` (``m`` = rows of the learned
  ``modality`` embedding, PE = :func:`positional_table` of the first ``T``
  positions), dropout, ``transformer_encoder``. Sows ``input_tokens``.

  Inputs ``ref (B, Nl, 512)``, ``audio (B, T, 512)``, ``pose (B, T, 512)``;
  output ``(B, Nl + 2T, 512)``.
  """
  T: int
  d_model: int
  nlayers: int
  nhead: int
  dim_feedforward: int
  dropout: float = 0.1
  precision: Any = None

  @nn.compact
  def __call__(self, ref: Array, audio: Array, pose: Array, *,
               deterministic: bool = True) -> Array:
    if audio.shape[1] != self.T or pose.shape[1] != self.T:
      # The official module builds its modality ids with its own T and
      # fails on any other window length.
      raise ValueError(f"the landmark generator was built for windows of "
                       f"T={self.T} frames; got audio {audio.shape[1]}, pose "
                       f"{pose.shape[1]}")
    m_pose, m_audio, m_ref = nn.Embed(
        NUM_MODALITIES, EMBED_DIM, embedding_init=_modality_init,
        name="modality")(jnp.asarray(
            [MODALITY_POSE, MODALITY_AUDIO, MODALITY_REFERENCE])).astype(
                audio.dtype)
    # position_v (pose) and position_a (audio) are the same table.
    pe = jnp.asarray(positional_table(self.T, EMBED_DIM), audio.dtype)
    pose_tokens = pose + pe + m_pose
    audio_tokens = audio + pe + m_audio
    ref_tokens = ref + m_ref
    tokens = jnp.concatenate([ref_tokens, audio_tokens, pose_tokens], axis=1)
    tokens = nn.Dropout(self.dropout)(tokens, deterministic=deterministic)
    self.sow("intermediates", "input_tokens", tokens)
    return TransformerEncoder(self.d_model, self.nlayers, self.nhead,
                              self.dim_feedforward, self.dropout, self.precision,
                              name="transformer_encoder")(
                                  tokens, deterministic=deterministic)


class LandmarkGenerator(nn.Module):
  """IP_LAP's ``Landmark_generator`` (module docstring for layouts).

  Attributes (the official constructor's): ``T`` window length (official
  5), ``d_model`` (512; nothing else works), ``nlayers`` (official 4),
  ``nhead`` (official 4), ``dim_feedforward`` (official 1024), ``dropout``
  (0.1, training only); ``precision`` for the convolutions and matmuls
  (e.g. HIGHEST on GPUs whose float32 matmuls default to TF32). Build it
  from a checkpoint with
  :func:`dagan_jax.convert.ip_lap_landmark.landmark_generator_kwargs_from_state_dict`.

  Call ``(mels (B,T,80,16,1), pose (B,T,74,2), ref_pose (B,Nl,74,2),
  ref_content (B,Nl,57,2), *, deterministic=True)`` -> predicted content
  landmarks ``(B, T, 57, 2)`` (17 jaw then 40 lip points, (x, y)).

  Submodules (official names): ``mel_encoder_{0..12}``,
  ``ref_encoder_{0..19}``, ``pose_encoder_{0..20}`` (:class:`ConvBlock`),
  ``Norm``, ``fusion_transformer``, ``mouse_keypoint_map``,
  ``jaw_keypoint_map``.
  """
  T: int = 5
  d_model: int = EMBED_DIM
  nlayers: int = 4
  nhead: int = 4
  dim_feedforward: int = 1024
  dropout: float = 0.1
  precision: Any = None

  @nn.compact
  def __call__(self, mels: Array, pose: Array, ref_pose: Array,
               ref_content: Array, *, deterministic: bool = True) -> Array:
    if self.d_model != EMBED_DIM:
      raise ValueError(f"IP_LAP's landmark generator only works with d_model="
                       f"{EMBED_DIM} (its encoders, LayerNorm, positional and "
                       f"modality tables are 512 wide); got {self.d_model}")
    _check_inputs(mels, pose, ref_pose, ref_content)
    if mels.shape[1] != self.T:
      raise ValueError(f"the landmark generator was built for windows of "
                       f"T={self.T} frames (the official module only runs "
                       f"on those); got {mels.shape[1]}")
    b, t = mels.shape[:2]
    nl = ref_pose.shape[1]
    refs = jnp.concatenate([ref_pose, ref_content], axis=2)  # (B, Nl, 131, 2)

    def encode(name: str, x: Array) -> Array:
      for block in _encoder_blocks(name, self.precision):
        x = block(x)
      if x.shape[1:3] != (1, 1):
        raise ValueError(f"{name} should reduce its input to 1x1; got a "
                         f"{x.shape[1]}x{x.shape[2]} map (input size?)")
      return x.reshape(x.shape[0], EMBED_DIM)

    # Frames and references of all samples in one batch, sample-major, as
    # the official torch.cat over the batch.
    mel_emb = encode("mel_encoder", mels.reshape((b * t,) + mels.shape[2:]))
    pose_emb = encode("pose_encoder", pose.reshape(b * t, 1, NUM_POSE, 2))
    ref_emb = encode("ref_encoder",
                     refs.reshape(b * nl, 1, NUM_POSE + NUM_CONTENT, 2))
    norm = LayerNorm(name="Norm")
    embeddings = {}
    for key, emb in (("mel", mel_emb), ("pose", pose_emb), ("ref", ref_emb)):
      self.sow("intermediates", f"{key}_embedding", emb)
      embeddings[key] = norm(emb)
      self.sow("intermediates", f"{key}_embedding_ln", embeddings[key])

    tokens = FusionTransformerEncoder(
        self.T, self.d_model, self.nlayers, self.nhead, self.dim_feedforward,
        self.dropout, self.precision, name="fusion_transformer")(
            embeddings["ref"].reshape(b, nl, EMBED_DIM),
            embeddings["mel"].reshape(b, t, EMBED_DIM),
            embeddings["pose"].reshape(b, t, EMBED_DIM),
            deterministic=deterministic)
    head = lambda f, name: nn.Dense(  # noqa: E731
        f, kernel_init=_xavier_normal, bias_init=nn.initializers.zeros,
        precision=self.precision, name=name)
    lip = head(2 * LIP_POINTS, "mouse_keypoint_map")(tokens[:, nl:nl + t])
    jaw = head(2 * JAW_POINTS, "jaw_keypoint_map")(tokens[:, nl + t:])
    self.sow("intermediates", "lip_head_out", lip)
    self.sow("intermediates", "jaw_head_out", jaw)
    return jnp.concatenate([jaw.reshape(b, t, JAW_POINTS, 2),
                            lip.reshape(b, t, LIP_POINTS, 2)], axis=2)


def _check_inputs(mels: Array, pose: Array, ref_pose: Array,
                  ref_content: Array) -> None:
  problems = []
  if mels.ndim != 5 or mels.shape[-1] != 1:
    problems.append(f"mels {tuple(mels.shape)}, expected (B, T, 80, 16, 1)")
  if pose.ndim != 4 or pose.shape[2:] != (NUM_POSE, 2):
    problems.append(f"pose {tuple(pose.shape)}, expected (B, T, {NUM_POSE}, 2)")
  if ref_pose.ndim != 4 or ref_pose.shape[2:] != (NUM_POSE, 2):
    problems.append(f"ref_pose {tuple(ref_pose.shape)}, expected "
                    f"(B, Nl, {NUM_POSE}, 2)")
  if ref_content.ndim != 4 or ref_content.shape[2:] != (NUM_CONTENT, 2):
    problems.append(f"ref_content {tuple(ref_content.shape)}, expected "
                    f"(B, Nl, {NUM_CONTENT}, 2)")
  if not problems:
    if pose.shape[:2] != mels.shape[:2]:
      problems.append(f"pose {tuple(pose.shape)} and mels {tuple(mels.shape)} "
                      "differ in (B, T)")
    if ref_pose.shape[:2] != ref_content.shape[:2] or \
        ref_pose.shape[0] != mels.shape[0]:
      problems.append(f"ref_pose {tuple(ref_pose.shape)}, ref_content "
                      f"{tuple(ref_content.shape)} and mels "
                      f"{tuple(mels.shape)} disagree on B or Nl")
  if problems:
    raise ValueError("LandmarkGenerator inputs: " + "; ".join(problems))


def from_official_inputs(T_mels, T_pose, Nl_pose, Nl_content  # noqa: N803
                         ) -> tuple[Array, Array, Array, Array]:
  """The official inputs ``(B,T,1,80,16)``, ``(B,T,2,74)``, ``(B,Nl,2,74)``,
  ``(B,Nl,2,57)`` in this module's layouts (channels last)."""
  return (jnp.moveaxis(jnp.asarray(T_mels), 2, -1),
          jnp.swapaxes(jnp.asarray(T_pose), -1, -2),
          jnp.swapaxes(jnp.asarray(Nl_pose), -1, -2),
          jnp.swapaxes(jnp.asarray(Nl_content), -1, -2))


def to_official_output(content: Array) -> Array:
  """``(B, T, 57, 2)`` -> the official ``(B*T, 2, 57)``."""
  b, t, n, c = content.shape
  return jnp.swapaxes(jnp.reshape(content, (b * t, n, c)), 1, 2)


def dummy_inputs(module: LandmarkGenerator, *, batch: int = 1,
                 num_refs: int = 1, dtype=jnp.float32) -> tuple[Array, ...]:
  """Zero inputs of the right shapes (80x16 mel chunks) for ``init``."""
  t = module.T
  return (jnp.zeros((batch, t, 80, 16, 1), dtype),
          jnp.zeros((batch, t, NUM_POSE, 2), dtype),
          jnp.zeros((batch, num_refs, NUM_POSE, 2), dtype),
          jnp.zeros((batch, num_refs, NUM_CONTENT, 2), dtype))


def init_variables(module: LandmarkGenerator, key: jax.Array
                   ) -> dict[str, Any]:
  """Freshly initialised ``{'params', 'batch_stats'}`` (official init)."""
  variables = module.init(key, *dummy_inputs(module))
  return {k: v for k, v in variables.items() if k in ("params", "batch_stats")}


def abstract_variables(module: LandmarkGenerator) -> dict[str, Any]:
  """Shapes of ``{'params', 'batch_stats'}`` (``jax.ShapeDtypeStruct``),
  without computing anything."""
  return jax.eval_shape(lambda k: init_variables(module, k),
                        jax.random.PRNGKey(0))
