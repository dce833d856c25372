"""What each speech-network trainer takes from an audio-visual window.

:mod:`dagan_jax.input.av_windows` makes records of ``T`` frames with every
prepared array; a trainer needs a few of them, some in another form. These
Grain maps run per record, before batching, in the pipeline's read threads
(or worker processes: this module imports no jax, so spawned workers stay
light), and drop what the step does not read, so that batches carry only
what reaches the device.

:class:`KeypointWindow` (audio2kp): ``source`` (H, W, 3) the identity image
(a random frame of the clip), ``a2h_audio`` (T, 4, 41), ``boxes`` (T, 256,
256) uint8 the pose boxes of the prepared head poses, ``kp_value`` (T, K,
2), ``kp_jacobian`` (T, K, 2, 2), ``face_found`` (T,).

:class:`PoseWindow` (audio2pose): ``image`` (H, W, 3) the window's first
frame, ``a2h_audio``, ``pose`` (T, 6) with rows of frames without a face
set to 0 (they are masked by ``face_found``, and a NaN there would poison
the gradient through the mask), ``face_found``.

Both keep ``skipped`` (bad clips the sampler skipped; the loop counts it).

**Pose boxes** are Audio2Head's (:func:`dagan_jax.face.pose_boxes.pose_boxes`,
values 0 / 255, exact in uint8; the step casts them to float32 as the
network is fed in inference). A frame without a face has no pose: it shows
the box of the nearest frame of the window that has one (ties: the earlier
frame), so that the 3-D convolutions see a plausible sequence; its targets
are masked. A window without any face shows empty boxes and is masked whole.
"""

from __future__ import annotations

from typing import Any

import grain
import numpy as np

from dagan_jax.face.pose_boxes import pose_boxes

#: Record keys every trainer keeps.
COMMON_KEYS = ("a2h_audio", "face_found", "skipped")


def nearest_valid(valid: np.ndarray) -> np.ndarray | None:
  """For each frame, the index of the nearest frame with ``valid`` set
  (ties: the earlier one); None when no frame is valid."""
  good = np.flatnonzero(valid)
  if good.size == 0:
    return None
  idx = np.arange(len(valid))
  return good[np.abs(idx[:, None] - good[None, :]).argmin(axis=1)]


def window_boxes(pose: np.ndarray, face_found: np.ndarray) -> np.ndarray:
  """(T, 256, 256) uint8 pose boxes of a window's (T, 6) poses (module
  docstring: frames without a face borrow the nearest face's pose)."""
  valid = np.asarray(face_found, bool) & np.all(np.isfinite(pose), axis=-1)
  near = nearest_valid(valid)
  if near is None:
    return np.zeros((len(pose), 256, 256), np.uint8)
  filled = np.asarray(pose, np.float64)[near]
  return pose_boxes(filled[:, :3], filled[:, 3:]).astype(np.uint8)


def _common(rec: dict[str, Any]) -> dict[str, Any]:
  return {k: rec[k] for k in COMMON_KEYS if k in rec}


class KeypointWindow(grain.transforms.Map):
  """A window record -> what the audio2kp step reads (module docstring)."""

  def map(self, element: dict[str, Any]) -> dict[str, Any]:
    out = _common(element)
    out["source"] = element["source"]
    out["boxes"] = window_boxes(element["pose"], element["face_found"])
    out["kp_value"] = element["kp_value"]
    out["kp_jacobian"] = element["kp_jacobian"]
    return out


class PoseWindow(grain.transforms.Map):
  """A window record -> what the audio2pose step reads (module docstring)."""

  def map(self, element: dict[str, Any]) -> dict[str, Any]:
    out = _common(element)
    out["image"] = element["frames"][0]
    found = np.asarray(element["face_found"], bool)
    out["pose"] = np.where(found[:, None], element["pose"], 0).astype(np.float32)
    return out
