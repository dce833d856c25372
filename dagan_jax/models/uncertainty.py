"""DaGAN++'s three-headed pose network (TPAMI 2023, Sec. 3.2, Eq. 2, 8, Fig. 3, 5f).

The face depth network of DaGAN++ is trained like DaGAN's (self-supervised,
monodepth2-style), but its pose network F_p has three heads on one backbone
(Fig. 3, Eq. 2):

    [R_i | t_i], K_i, U_i = F_p(I_i || I_{i+1})

* the relative pose ``[R|t]`` (axis-angle + translation) and
* the per-pair camera intrinsics ``K`` (learned, no calibration needed),
  both from Face-Depth-Network's pose decoder
  (:class:`~dagan_jax.models.pose.PoseDecoder`, reused unchanged), and
* a pixel-wise uncertainty map ``U`` in (0, 1) (Eq. 8):
  ``U = sigmoid(F_U(F_p(I_i, I_{i+1})))`` where F_U is "a stack of
  upblocks" (Fig. 5f, :class:`UncertaintyHead`). ``U`` divides the
  photometric error and ``log U`` regularises it in Eq. 7
  (:func:`dagan_jax.losses.depth.uncertainty_weighted_loss`).

The backbone is :class:`~dagan_jax.models.pose.PoseEncoder` (ResNet-18 on the
two frames stacked on channels, Sec. 4.3: "the architecture of the pose
network ... is consistent with that of DaGAN"). The paper says the pose
network output is [1024 x 2 x 2]; our (DaGAN's) backbone gives **512 x 8 x 8**
at 256x256 (stride 32; 2048 x 8 x 8 with ResNet-50), so **5** x2 up-blocks
reach the input resolution (the paper's 2x2 map would need 7). The number of
up-blocks is therefore derived from the input and feature sizes (or set with
``num_up_blocks``) rather than fixed.

Where the paper is silent, and what we chose:

* **Head input.** The last (stride-32) map of the pose encoder: Fig. 3 puts
  the three heads "after the pose backbone network".
* **Widths.** Up-block ``j`` outputs ``max(min_features, max_features //
  2**j)`` channels: 256, 128, 64, 32, 16 at the defaults (halving like the
  generator's decoder, starting at the pose decoder's 256).
* **Output layer.** An UpBlock ends in BN + ReLU, whose output (>= 0) under a
  sigmoid would be >= 0.5; a final 3x3 conv to 1 channel (``final``) comes
  before the sigmoid.
* **Non power-of-two sizes.** If ``2**n`` times the feature size is not the
  frame size (e.g. odd sizes), the head output is resized bilinearly to the
  frame size before the conv.
* **One map per pair.** ``U`` is predicted for the (target, source) pair fed
  to the network, ``(B, H, W, 1)``, as Eq. 2.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax

from dagan_jax import ops
from dagan_jax.models.depth import num_ch_enc
from dagan_jax.models.layers import Conv2d, UpBlock2d
from dagan_jax.models.pose import PoseDecoder, PoseEncoder

Array = jax.Array

#: Submodule names of :class:`UncertaintyPoseNetwork` (one per network).
POSE_PARTS = ("pose_encoder", "pose_decoder", "uncertainty_head")


def num_up_blocks_for(feature_size: Sequence[int], image_size: Sequence[int]) -> int:
  """x2 up-blocks needed to bring ``feature_size`` to at least ``image_size``."""
  ratio = max(image_size[0] / feature_size[0], image_size[1] / feature_size[1])
  return max(0, math.ceil(math.log2(ratio) - 1e-9))


class UncertaintyHead(nn.Module):
  """The uncertainty head F_U of DaGAN++ (Eq. 8, Fig. 5f).

  ``__call__(feature (B, h, w, C))`` -> ``U (B, H, W, 1)`` in (0, 1), with
  ``(H, W) = image_size``: ``num_up_blocks`` UpBlocks (nearest x2, 3x3 conv,
  BN, ReLU; ``up_blocks_j``), a 3x3 conv to one channel (``final``) and a
  sigmoid.

  Attributes:
    image_size: ``(height, width)`` of the frames.
    max_features, min_features: channel schedule (module docstring).
    num_up_blocks: None: enough to reach ``image_size`` (5 for 8 -> 256).
  """
  image_size: tuple[int, int] = (256, 256)
  max_features: int = 256
  min_features: int = 16
  num_up_blocks: int | None = None

  def widths(self, n: int) -> list[int]:
    return [max(self.min_features, self.max_features // (2 ** j))
            for j in range(n)]

  @nn.compact
  def __call__(self, feature: Array) -> Array:
    n = self.num_up_blocks
    if n is None:
      n = num_up_blocks_for(feature.shape[1:3], self.image_size)
    x = feature
    for j, c in enumerate(self.widths(n)):
      x = UpBlock2d(c, 3, 1, name=f"up_blocks_{j}")(x)
    size = tuple(int(s) for s in self.image_size)
    if x.shape[1:3] != size:
      x = ops.resize_bilinear(x, size)
    x = Conv2d(1, 3, padding=1, name="final")(x)
    return jax.nn.sigmoid(x)


class UncertaintyPoseNetwork(nn.Module):
  """F_p of DaGAN++ (Eq. 2, Fig. 3): pose encoder + pose/intrinsics decoder
  + uncertainty head.

  ``__call__(pair (B, H, W, 6))`` with the two RGB frames stacked on
  channels (``I_i || I_{i+1}``), returns

  * ``axisangle``, ``translation``: ``(B, F, 1, 3)`` as
    :class:`~dagan_jax.models.pose.PoseDecoder` (F = 2, the official
    ``num_frames_to_predict_for``; monodepth2 uses frame 0);
  * ``K``: ``(B, 3, 3)`` intrinsics, as ``PoseDecoder``; ``intrinsics`` is
    the same array under the paper's name;
  * ``uncertainty``: ``(B, H, W, 1)`` in (0, 1) (Eq. 8).

  Submodules ``pose_encoder``, ``pose_decoder``, ``uncertainty_head`` (see
  :func:`split_pose_variables` to store them as separate networks, e.g. to
  load Face-Depth-Network's pose checkpoints into the first two).
  """
  num_layers: int = 18
  image_size: tuple[int, int] = (256, 256)
  num_frames_to_predict_for: int = 2
  head_max_features: int = 256
  head_min_features: int = 16
  head_num_up_blocks: int | None = None

  @nn.compact
  def __call__(self, pair: Array) -> dict[str, Array]:
    if pair.shape[-1] != 6:
      raise ValueError("UncertaintyPoseNetwork expects two RGB frames stacked "
                       f"on channels (B, H, W, 6); got {pair.shape}")
    feats = PoseEncoder(self.num_layers,
                        name="pose_encoder")(pair)
    out = dict(PoseDecoder(num_ch_enc(self.num_layers), 1,
                           self.num_frames_to_predict_for,
                           image_size=tuple(self.image_size),
                           name="pose_decoder")([feats]))
    out["intrinsics"] = out["K"]
    out["uncertainty"] = UncertaintyHead(
        image_size=tuple(self.image_size), max_features=self.head_max_features,
        min_features=self.head_min_features,
        num_up_blocks=self.head_num_up_blocks,
        name="uncertainty_head")(feats[-1])
    return out


def split_pose_variables(variables: Mapping[str, Any]) -> dict[str, dict]:
  """``{'params': {part: ...}, 'batch_stats': ...}`` of the whole network ->
  ``{part: {'params': ..., 'batch_stats'?: ...}}`` for each of
  :data:`POSE_PARTS` (the per-network layout of ``models/build.py``)."""
  out: dict[str, dict] = {}
  for part in POSE_PARTS:
    out[part] = {col: tree[part] for col, tree in variables.items()
                 if part in tree}
  return out


def merge_pose_variables(parts: Mapping[str, Mapping[str, Any]]) -> dict[str, dict]:
  """Inverse of :func:`split_pose_variables`."""
  out: dict[str, dict] = {}
  for part in POSE_PARTS:
    for col, tree in parts[part].items():
      out.setdefault(col, {})[part] = tree
  return out
