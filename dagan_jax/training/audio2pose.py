"""Training Audio2Head's ``audio2pose`` on real head poses
(``trainer: 'audio2pose'``).

audio2pose (:class:`dagan_jax.models.audio2pose.Audio2Pose`) reads the
identity image and the speech of ``T`` frames and returns ``T + 1``
normalised 6-DoF poses: row 0 from the image alone, row ``t`` after the
LSTM has heard speech blocks ``0 .. t - 1``; ``dagan-jax speak`` shows row
``t`` with video frame ``t``. Training follows that reading: the image is
the window's *first* frame, the speech its ``T`` blocks (``train_params.
window`` frames), and rows ``0 .. T - 1`` are compared with the poses of
frames ``0 .. T - 1`` (row ``T``, the official padding row, is not used).
Targets are the prepared head poses (our face mesh and rigid fit, in
Audio2Head's camera), normalised as the official de-normalisation inverted:
``2 (pose - POSE_MIN) / (POSE_MAX - POSE_MIN) - 1``. Frames without a face
are masked. The shared program (data, step, resume, export) is
:mod:`dagan_jax.training.audio2head`.

Loss (weights ``train_params.loss_weights``), over the global batch:

* ``pose``: L1 between predicted and real normalised poses;
* ``motion_std`` and ``motion_velocity``: per window and pose column, the
  L1 distance between the predicted and the real motion *statistics*: the
  standard deviation over the window's frames, and the mean absolute
  frame-to-frame change.

Why the motion terms. The paper's stated concern (Sec. 1): the same speech
goes with many head motions (one speaker turns left where another turns
right), so a network trained on the pose loss alone learns the average, a
still-alike head. L1 alone rewards that: for a window whose real motion is
unpredictable from speech, a constant at the median is its minimiser. The
two statistics do not ask for *the* real trajectory, only for one that
moves as much (spread) and as fast (speed) as the real one in that window;
a still head pays their full value. We chose matching statistics over a
sequence discriminator: it adds no network, no second optimiser and no
adversarial balance to tune, is deterministic (exact resume is trivial),
and costs a few reductions per step. Its limit: it constrains two moments
per window, not the shape of the motion, which a discriminator would.
Scale of the terms on av_mini (normalised units, 64-frame windows): the
per-window spread is about 0.02 and the mean speed about 0.008 per frame,
so a still head pays about 0.02 + 2 x 0.008 with the default weights (1, 1,
2), the same order as the L1 it saves.

Pictures (``image_every``): for two windows, at four slots, the first frame
(the identity) with the real pose's box in green and the predicted one's in
red (Audio2Head's boxes, 256 x 256), predicted in eval mode.
"""

from __future__ import annotations

import functools
import pathlib
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from dagan_jax import compute
from dagan_jax.errors import ConfigError
from dagan_jax.models.audio2pose import POSE_MAX, POSE_MIN, denormalize_pose
from dagan_jax.training import audio2head, parallel
from dagan_jax.training.speech_records import PoseWindow

Array = jax.Array
NETWORK = "audio2pose"
TERMS = ("pose", "motion_std", "motion_velocity")


def window(config) -> int:
  """Frames per training window (``train_params.window``)."""
  t = int(config.train_params.window)
  if t < 2:
    raise ConfigError(f"train_params.window is {t}; audio2pose needs at least "
                      "2 frames (its motion terms compare frames)")
  return t


def normalize_pose(pose: Array) -> Array:
  """Poses (..., 6) in the official units -> the network's [-1, 1] range
  (the inverse of :func:`~dagan_jax.models.audio2pose.denormalize_pose`)."""
  return (pose - POSE_MIN) / (POSE_MAX - POSE_MIN) * 2.0 - 1.0


def _masked_mean(x: Array, mask: Array, axis: int) -> Array:
  return jnp.sum(x * mask, axis) / jnp.maximum(jnp.sum(mask, axis), 1.0)


def motion_statistics(poses: Array, face: Array) -> tuple[Array, Array]:
  """Per window and column: (standard deviation over frames with a face,
  mean absolute change between consecutive frames that both have one),
  each (B, 6), of ``poses`` (B, T, 6) with ``face`` (B, T) in {0, 1}."""
  m = face[..., None]
  mean = _masked_mean(poses, m, 1)
  var = _masked_mean(jnp.square(poses - mean[:, None]), m, 1)
  std = jnp.sqrt(var + 1e-8)
  pair = m[:, 1:] * m[:, :-1]
  speed = _masked_mean(jnp.abs(poses[:, 1:] - poses[:, :-1]), pair, 1)
  return std, speed


def pose_loss(params, batch_stats, batch: Mapping[str, Array],
              axis_name: str | None, *, module, dtype,
              weights: Mapping[str, float]):
  """The weighted terms of the module docstring."""
  poses, stats = audio2head.apply_train(module, dtype, params, batch_stats,
                                        batch["image"], batch["a2h_audio"])
  t = batch["a2h_audio"].shape[1]
  pred = poses[:, :t]                                   # rows 0 .. T-1
  target = normalize_pose(batch["pose"])                # (B, T, 6)
  face = batch["face_found"].astype(jnp.float32)        # (B, T)
  terms = {}
  if weights.get("pose"):
    terms["pose"] = weights["pose"] * audio2head.global_mean(
        jnp.abs(pred - target), face[..., None], axis_name)
  if weights.get("motion_std") or weights.get("motion_velocity"):
    std_p, speed_p = motion_statistics(pred, face)
    std_t, speed_t = motion_statistics(target, face)
    frames = jnp.sum(face, axis=1)
    if weights.get("motion_std"):
      terms["motion_std"] = weights["motion_std"] * audio2head.global_mean(
          jnp.abs(std_p - std_t), (frames >= 2)[:, None], axis_name)
    if weights.get("motion_velocity"):
      pairs = jnp.sum(face[:, 1:] * face[:, :-1], axis=1)
      terms["motion_velocity"] = weights["motion_velocity"] * audio2head.global_mean(
          jnp.abs(speed_p - speed_t), (pairs >= 1)[:, None], axis_name)
  return sum(terms.values()), (terms, stats)


def make_task(config, models, steps_per_epoch: int) -> audio2head.SpeechTask:
  tp = config.train_params
  weights = {k: float(v) for k, v in dict(tp.loss_weights).items()}
  unknown = sorted(set(weights) - set(TERMS))
  if unknown:
    raise ConfigError(f"train_params.loss_weights: unknown term(s) {unknown} "
                      f"for audio2pose ({', '.join(TERMS)})")
  if not any(weights.values()):
    raise ConfigError("train_params.loss_weights: every audio2pose term is 0")
  dtype = audio2head.compute_dtype(tp)
  return audio2head.SpeechTask(
      network=NETWORK, models=models,
      loss=functools.partial(pose_loss, module=models.audio2pose, dtype=dtype,
                             weights=weights),
      optimizer=audio2head.optimizer(tp, steps_per_epoch), compute_dtype=dtype,
      kernels=str(config.compute.kernels))


_PREDICT: dict[int, Any] = {}


def predict(task: audio2head.SpeechTask, state, batch: Mapping[str, np.ndarray]
            ) -> np.ndarray:
  """Eval-mode normalised poses (B, T + 1, 6) of a host batch (one device)."""
  if id(task) not in _PREDICT:
    _PREDICT[id(task)] = compute.jit(
        lambda v, image, audio: task.module.apply(v, image, audio),
        kernels=task.kernels, inference=True)
  host = parallel.to_host(state)
  variables = {"params": host.params, "batch_stats": host.batch_stats}
  return np.asarray(jax.device_get(_PREDICT[id(task)](
      variables, jnp.asarray(batch["image"]), jnp.asarray(batch["a2h_audio"]))))


def pictures(task: audio2head.SpeechTask, state, batch) -> np.ndarray:
  """Rows: per window, at four slots, the identity with the real (green)
  and predicted (red) pose boxes."""
  from dagan_jax import visualize  # pylint: disable=import-outside-toplevel
  from dagan_jax.face.pose_boxes import pose_boxes  # pylint: disable=import-outside-toplevel
  size = audio2head.A2H_SIZE
  pred = predict(task, state, batch)
  length = batch["a2h_audio"].shape[1]
  slots = sorted({0, length // 3, 2 * length // 3, length - 1})
  rows = []
  for i in range(batch["image"].shape[0]):
    base = visualize.to_rgb(batch["image"][i], (size, size))
    rot, trans = denormalize_pose(pred[i, slots])
    predicted = pose_boxes(rot, trans)
    real = batch["pose"][i, slots]
    row = []
    for j, t in enumerate(slots):
      tile = base.copy()
      if batch["face_found"][i, t]:
        tile[pose_boxes(real[j:j + 1, :3], real[j:j + 1, 3:])[0] > 0] = (0, 1, 0)
      tile[predicted[j] > 0] = (1, 0, 0)
      row.append(tile)
    rows.append(row)
  return visualize.grid(rows)


STAGE = audio2head.Stage(
    network=NETWORK, make_task=make_task, records=PoseWindow(), window=window,
    needs_keypoints=False, pictures=pictures,
    progress_keys={"loss": "total", "pose": "pose"})


def train_and_evaluate(config, workdir: str | pathlib.Path, *,
                       max_steps: int | None = None,
                       progress: bool = True) -> dict[str, Any]:
  """Trains audio2pose in ``workdir`` (resumable); see the module docstring."""
  return audio2head.train(config, workdir, STAGE, max_steps=max_steps,
                          progress=progress)
