"""Training Audio2Head's ``audio2kp`` on a renderer's keypoints
(``trainer: 'audio2kp'``).

audio2kp (:class:`dagan_jax.models.audio2kp.Audio2KP`) predicts, for a
window of ``L = audio2head_params.audio2kp.seq_len`` frames, the keypoints
and Jacobians that drive the renderer. It learns them from the renderer's
own frozen detector: ``dagan-jax data prepare --model RENDERER`` stored the
detector's ``kp_value`` / ``kp_jacobian`` on every frame's crop, so no
renderer runs during training. The shared program (data, step, resume,
export) is :mod:`dagan_jax.training.audio2head`.

A window's inputs, as ``dagan-jax speak`` feeds the network:

* speech: the window's ``L`` blocks of four 41-d rows (``a2h_audio``);
* pose boxes: Audio2Head's boxes of the *real* head poses of those frames
  (the prepared ``pose``, our face tools' in Audio2Head's camera), drawn on
  the host (:mod:`dagan_jax.training.speech_records`), values 0 / 255;
  in inference they come from audio2pose;
* identity: the window's ``source``, a random frame of the same clip, at
  the 256 x 256 the network takes (resized bilinearly when the renderer's
  frames are another size; 256 for Audio2Head itself).

Loss (weights ``train_params.loss_weights``): ``kp_value``, the L1 distance
of the predicted to the detector's keypoints (x, y in [-1, 1]), and
``kp_jacobian``, the L1 distance of the Jacobian entries, both means over
the global batch's frames with a face (``face_found``: a frame without one
has no pose box of its own, see speech_records). The default weights (10,
1) put both on a similar scale: keypoint errors that matter are a few
hundredths, Jacobian entries are of order 1. The heatmaps are not
supervised (the prepared data hold none, and computing them would need the
renderer in the step).

Pictures (``image_every``): for two windows, at four slots, the pose box
and the identity image with the detector's (target) keypoints and with the
predicted ones (same colour per keypoint), predicted in eval mode.
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
from dagan_jax.training import audio2head, parallel
from dagan_jax.training.speech_records import KeypointWindow

Array = jax.Array
NETWORK = "audio2kp"


def window(config) -> int:
  """Frames per training window: the network's ``seq_len``."""
  return int(config.audio2head_params.audio2kp.seq_len)


def identity_image(source: Array) -> Array:
  """(B, H, W, 3) -> (B, 256, 256, 3): the size audio2kp takes."""
  size = audio2head.A2H_SIZE
  if source.shape[1:3] == (size, size):
    return source
  return jax.image.resize(source, (source.shape[0], size, size, 3), "bilinear")


def network_inputs(batch: Mapping[str, Array]) -> tuple[Array, Array, Array]:
  """(audio, pose boxes as float32, identity at 256) of a batch."""
  return (batch["a2h_audio"], batch["boxes"].astype(jnp.float32),
          identity_image(batch["source"]))


def keypoint_loss(params, batch_stats, batch: Mapping[str, Array],
                  axis_name: str | None, *, module, dtype,
                  weights: Mapping[str, float]):
  """Weighted L1 on values and Jacobians (module docstring)."""
  out, stats = audio2head.apply_train(module, dtype, params, batch_stats,
                                      *network_inputs(batch))
  face = batch["face_found"].astype(jnp.float32)            # (B, L)
  terms = {}
  if weights.get("kp_value"):
    err = jnp.abs(out["value"] - batch["kp_value"])          # (B, L, K, 2)
    terms["kp_value"] = weights["kp_value"] * audio2head.global_mean(
        err, face[..., None, None], axis_name)
  if weights.get("kp_jacobian"):
    err = jnp.abs(out["jacobian"] - batch["kp_jacobian"])    # (B, L, K, 2, 2)
    terms["kp_jacobian"] = weights["kp_jacobian"] * audio2head.global_mean(
        err, face[..., None, None, None], axis_name)
  return sum(terms.values()), (terms, stats)


def make_task(config, models, steps_per_epoch: int) -> audio2head.SpeechTask:
  tp = config.train_params
  weights = {k: float(v) for k, v in dict(tp.loss_weights).items()}
  unknown = sorted(set(weights) - {"kp_value", "kp_jacobian"})
  if unknown:
    raise ConfigError(f"train_params.loss_weights: unknown term(s) {unknown} "
                      "for audio2kp (kp_value, kp_jacobian)")
  if not any(weights.values()):
    raise ConfigError("train_params.loss_weights: every audio2kp term is 0")
  if weights.get("kp_jacobian") and not models.audio2kp.estimate_jacobian:
    raise ConfigError("train_params.loss_weights.kp_jacobian is not 0 but "
                      "audio2head_params.audio2kp.estimate_jacobian is off")
  dtype = audio2head.compute_dtype(tp)
  return audio2head.SpeechTask(
      network=NETWORK, models=models,
      loss=functools.partial(keypoint_loss, module=models.audio2kp, dtype=dtype,
                             weights=weights),
      optimizer=audio2head.optimizer(tp, steps_per_epoch), compute_dtype=dtype,
      kernels=str(config.compute.kernels))


_PREDICT: dict[int, Any] = {}


def predict(task: audio2head.SpeechTask, state, batch: Mapping[str, np.ndarray]
            ) -> dict[str, np.ndarray]:
  """Eval-mode keypoints of a host batch (one device; for pictures)."""
  if id(task) not in _PREDICT:
    _PREDICT[id(task)] = compute.jit(
        lambda v, inputs: task.module.apply(v, *network_inputs(inputs)),
        kernels=task.kernels, inference=True)
  host = parallel.to_host(state)
  variables = {"params": host.params, "batch_stats": host.batch_stats}
  inputs = {k: batch[k] for k in ("a2h_audio", "boxes", "source")}
  return jax.device_get(_PREDICT[id(task)](variables, inputs))


def tile_size(image_size: int) -> int:
  """Picture tiles: at least 128 pixels (small frames are upscaled)."""
  return max(int(image_size), 128)


def pictures(task: audio2head.SpeechTask, state, batch) -> np.ndarray:
  """Rows: per window, at four slots, [pose box, target kp, predicted kp]."""
  from dagan_jax import visualize  # pylint: disable=import-outside-toplevel
  pred = predict(task, state, batch)
  length = batch["a2h_audio"].shape[1]
  slots = sorted({0, length // 4, length // 2, 3 * length // 4})
  size = tile_size(batch["source"].shape[1])
  rows = []
  for i in range(batch["source"].shape[0]):
    src = visualize.to_rgb(batch["source"][i], (size, size))
    row = []
    for t in slots:
      box = batch["boxes"][i, t].astype(np.float32) / 255.0
      row += [visualize.to_rgb(box, (size, size)),
              visualize.draw_keypoints(src, batch["kp_value"][i, t]),
              visualize.draw_keypoints(src, pred["value"][i, t])]
    rows.append(row)
  return visualize.grid(rows)


STAGE = audio2head.Stage(
    network=NETWORK, make_task=make_task, records=KeypointWindow(),
    window=window, needs_keypoints=True, pictures=pictures,
    progress_keys={"loss": "total", "kp": "kp_value"})


def train_and_evaluate(config, workdir: str | pathlib.Path, *,
                       max_steps: int | None = None,
                       progress: bool = True) -> dict[str, Any]:
  """Trains audio2kp in ``workdir`` (resumable); see the module docstring."""
  return audio2head.train(config, workdir, STAGE, max_steps=max_steps,
                          progress=progress)
