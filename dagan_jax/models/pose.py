"""The pose network of Face-Depth-Network, with learned camera intrinsics.

DaGAN's face depth network (Hong et al., CVPR 2022, Sec. 3.1) is trained
self-supervised on face videos as in monodepth2 (Godard et al., ICCV 2019):
a pose network predicts the relative camera motion between two frames, and,
since face videos come without calibration, also the camera intrinsics
``K`` ("learned intrinsics", Gordon et al., ICCV 2019).

Layout of the official Face-Depth-Network (``pose_model_type
'separate_resnet'``, ``pose_model_input 'pairs'``):

* ``pose_encoder.pth``: a :class:`~dagan_jax.models.depth.ResnetEncoder` with
  ``num_input_images=2`` -- the two RGB frames stacked on channels (6), first
  conv ``(64, 6, 7, 7)``; keys ``encoder.*`` like the depth encoder.
* ``pose.pth``: :class:`PoseDecoder` with ``num_input_features=1`` and
  ``num_frames_to_predict_for=2``; an ``nn.ModuleList`` ``net`` whose entries
  are, in order, ``squeeze`` (1x1, enc -> 256), ``pose_0`` (3x3), ``pose_1``
  (3x3), ``pose_2`` (1x1 -> 6 * frames), ``focal`` and ``offset`` (3x3 -> 2);
  keys ``net.N.weight``/``net.N.bias``, here submodules ``net_N``.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dagan_jax.models.depth import ResnetEncoder
from dagan_jax.models.layers import Conv2d

Array = jax.Array

#: Names of the entries of the official ``PoseDecoder.net`` ModuleList.
POSE_DECODER_LAYOUT = ("squeeze", "pose_0", "pose_1", "pose_2",
                       "intrinsics_focal", "intrinsics_offset")


class PoseEncoder(ResnetEncoder):
  """:class:`ResnetEncoder` over two frames stacked on channels.

  ``__call__(pair (B, H, W, 6))`` with the frames in temporal order.
  """
  num_input_images: int = 2


class PoseDecoder(nn.Module):
  """monodepth2's ``PoseDecoder`` plus Face-Depth-Network's intrinsics head.

  Attributes:
    num_ch_enc: encoder channels (only the last is used).
    num_input_features: encoder feature lists concatenated (official 1).
    num_frames_to_predict_for: poses predicted per input (official 2).
    stride: stride of the two 3x3 pose convs (official 1).
    image_size: ``(height, width)`` of the training frames; the intrinsics
      head scales focal lengths and principal point by ``(width, height)``.

  ``__call__(features)`` where ``features`` is a list of
  ``num_input_features`` encoder outputs (lists of 5 maps), returns

  * ``axisangle``: ``(B, F, 1, 3)``, ``translation``: ``(B, F, 1, 3)``, both
    ``0.01 *`` the spatial mean of the ``pose_2`` conv (monodepth2);
  * ``K``: ``(B, 3, 3)`` intrinsics ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``
    with ``(fx, fy) = softplus(focal).mean * (width, height)`` and
    ``(cx, cy) = (softplus(offset).mean + 0.5) * (width, height)``.
  """
  num_ch_enc: Sequence[int] = (64, 64, 128, 256, 512)
  num_input_features: int = 1
  num_frames_to_predict_for: int = 2
  stride: int = 1
  image_size: tuple[int, int] = (256, 256)

  @nn.compact
  def __call__(self, features: Sequence[Sequence[Array]]) -> dict[str, Array]:
    f = self.num_frames_to_predict_for
    squeeze = Conv2d(256, 1, name="net_0")
    cat = jnp.concatenate([nn.relu(squeeze(feats[-1])) for feats in features],
                          axis=-1)
    feat = nn.relu(Conv2d(256, 3, self.stride, 1, name="net_1")(cat))
    feat = nn.relu(Conv2d(256, 3, self.stride, 1, name="net_2")(feat))
    out = Conv2d(6 * f, 1, name="net_3")(feat)  # (B, h, w, 6F)
    out = 0.01 * out.mean(axis=(1, 2)).reshape(-1, f, 1, 6)
    h, w = self.image_size
    wh = jnp.asarray([w, h], feat.dtype)
    focal = jax.nn.softplus(Conv2d(2, 3, 1, 1, name="net_4")(feat))
    offset = jax.nn.softplus(Conv2d(2, 3, 1, 1, name="net_5")(feat))
    focal = focal.mean(axis=(1, 2)) * wh  # (B, 2)
    centre = (offset.mean(axis=(1, 2)) + 0.5) * wh  # (B, 2)
    b = focal.shape[0]
    k = jnp.zeros((b, 3, 3), feat.dtype)
    k = k.at[:, 0, 0].set(focal[:, 0]).at[:, 1, 1].set(focal[:, 1])
    k = k.at[:, 0, 2].set(centre[:, 0]).at[:, 1, 2].set(centre[:, 1])
    k = k.at[:, 2, 2].set(1.0)
    return {"axisangle": out[..., :3], "translation": out[..., 3:], "K": k}
