"""``evaluate --protocol speech``: a speech-driven model on held-out clips with sound.

For every clip of ``ROOT/<split>`` (frames resized to 256x256; its sound from
:func:`dagan_jax.audio.sources.audio_source`), frame 0 is the identity image
and the clip's own speech drives the model (:class:`dagan_jax.inference.
speak.Speaker`). ``T`` = the frames the speech gives (one per 40 ms), cut to
the clip's length. Metrics per clip, then their mean over clips:

* **kp_l1**: mean |keypoint - detector keypoint| (x, y in [-1, 1]) of the
  keypoints predicted from the speech and the clip's **real** head poses
  (our face mesh and pose fit, :mod:`dagan_jax.face.pose`) against the
  renderer's own keypoint detector on the real frames; **jac_l1** the same
  for the Jacobians.
* **l1 / psnr / ssim**: the frames rendered from those keypoints against
  the real frames (reconstruction with ground-truth poses;
  :mod:`dagan_jax.evaluation.metrics`).
* **Head motion**: per-axis standard deviation and mean absolute
  frame-to-frame velocity of the poses the model predicts from the speech
  (``pred_rot_std`` in degrees, ``pred_trans_std`` in the camera's units,
  ``pred_rot_vel`` degrees/frame, ...) beside the same of the real poses
  (``real_*``); ``motion_std_ratio`` = predicted / real rotation std (1 is
  as lively as the real speaker; near 0 a still head).
* **Lip sync, weight-free** (:mod:`dagan_jax.audio.sync`): the correlation
  between mouth opening (face mesh) and speech energy at the best lag within
  +-15 frames, its lag and confidence, on the generated video
  (``sync_gen_*``) and on the real one (``sync_real_*``).
* **LSE-C / LSE-D** (:mod:`dagan_jax.evaluation.syncnet`), given SyncNet's
  weights (``syncnet=``, ``--syncnet syncnet_v2.model``): of the generated
  video with the speech (``lse_c``, ``lse_d``, ``lse_offset``) and of the
  real clip (``real_lse_*``), on crops around our face mesh's boxes (not
  S3FD's: comparable between methods scored here, not with published
  tables); NaN for a clip shorter than 21 frames or without a face.
  Without weights both are listed under ``skipped`` with that reason.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

from dagan_jax.errors import DataError

FRAME = 256
LSE_SKIPPED = {"lse_c": "needs SyncNet weights: --syncnet syncnet_v2.model",
               "lse_d": "needs SyncNet weights: --syncnet syncnet_v2.model"}


def _motion_stats(poses: np.ndarray, prefix: str) -> dict[str, float]:
  rot = np.degrees(poses[:, :3])
  trans = poses[:, 3:]
  out = {f"{prefix}_rot_std": float(rot.std(axis=0).mean()),
         f"{prefix}_trans_std": float(trans.std(axis=0).mean())}
  if len(poses) > 1:
    out[f"{prefix}_rot_vel"] = float(np.abs(np.diff(rot, axis=0)).mean())
    out[f"{prefix}_trans_vel"] = float(np.abs(np.diff(trans, axis=0)).mean())
  return out


def _sync(points: np.ndarray, samples: np.ndarray, fps: float, prefix: str
          ) -> dict[str, float]:
  from dagan_jax.audio import sync  # pylint: disable=import-outside-toplevel
  openness = sync.mouth_openness(points)
  energy = sync.speech_energy(samples, openness.size, fps)
  est = sync.estimate_offset(openness, energy, fps=fps)
  best = est.scores[list(est.lags).index(est.offset)] if np.isfinite(
      est.scores).any() else float("nan")
  return {f"{prefix}_corr": float(best), f"{prefix}_offset": float(est.offset),
          f"{prefix}_confidence": float(est.confidence)}


def lse_scores(syncnet, frames: np.ndarray, points: np.ndarray,
               samples: np.ndarray, fps: float, prefix: str) -> dict[str, float]:
  """``{prefix}_c``, ``_d``, ``_offset`` of a video with its sound, cropped
  around the face mesh ``points``; NaN when the video is too short for
  LSE or has no face (:meth:`~dagan_jax.evaluation.syncnet.SyncNetScorer.lse`)."""
  from dagan_jax.evaluation import syncnet as syncnet_lib  # pylint: disable=import-outside-toplevel
  from dagan_jax.face import crop  # pylint: disable=import-outside-toplevel
  boxes = crop.mesh_boxes(points)
  frames_25 = len(syncnet_lib.resample_to_25(len(frames), fps))
  if (min(frames_25, len(samples) // syncnet_lib.SAMPLES_PER_FRAME) < syncnet.min_frames
      or not np.isfinite(boxes).all(axis=1).any()):
    return {f"{prefix}_{k}": float("nan") for k in ("c", "d", "offset")}
  r = syncnet.lse(frames, samples, fps=fps, boxes=boxes, where=prefix)
  return {f"{prefix}_c": r["lse_c"], f"{prefix}_d": r["lse_d"],
          f"{prefix}_offset": float(r["offset"])}


def evaluate_clip(speaker, path: str, *, max_frames: int | None = None,
                  mesh=None, syncnet=None) -> dict[str, float]:
  """The metrics of one clip (module docstring); LSE with ``syncnet`` (a
  :class:`~dagan_jax.evaluation.syncnet.SyncNetScorer`)."""
  import jax  # pylint: disable=import-outside-toplevel

  from dagan_jax.audio import io as audio_io  # pylint: disable=import-outside-toplevel
  from dagan_jax.audio import sources  # pylint: disable=import-outside-toplevel
  from dagan_jax.evaluation import metrics  # pylint: disable=import-outside-toplevel
  from dagan_jax.face import pose as pose_lib  # pylint: disable=import-outside-toplevel
  from dagan_jax.face.pose_boxes import pose_boxes  # pylint: disable=import-outside-toplevel
  from dagan_jax.inference.animate import resize_frames  # pylint: disable=import-outside-toplevel
  from dagan_jax.input import media  # pylint: disable=import-outside-toplevel

  src = sources.audio_source(path)
  if src is None:
    raise DataError(f"{path}: no sound (no audio stream and no sidecar .wav)")
  samples = audio_io.read_speech(src)
  video, fps = media.read_video(path)
  fps = float(fps or 25.0)
  frames = resize_frames(np.asarray(video, np.float32), (FRAME, FRAME), path)
  blocks = speaker.features(samples, where=src)
  t = min(len(blocks), len(frames), max_frames or len(frames))
  if t < 2:
    raise DataError(f"{path}: {t} frame(s) with speech; the protocol needs 2")
  blocks, frames = blocks[:t], frames[:t]
  image = frames[0]

  res = mesh(frames)
  if not res.found.any():
    raise DataError(f"{path}: no face in any frame")
  real_poses = pose_lib.head_poses(res.points, (FRAME, FRAME), res.found)
  good = np.flatnonzero(res.found)       # frames without a face: nearest pose
  nearest = good[np.abs(np.arange(t)[:, None] - good[None]).argmin(1)]
  real_poses = real_poses[nearest]

  out: dict[str, float] = {"frames": float(t)}
  # Keypoints from the speech with the real poses vs the detector's.
  rows = np.concatenate([real_poses, real_poses[-1:]])
  boxes = pose_boxes(rows[:, :3], rows[:, 3:])
  value, jac = speaker.keypoints(image, blocks, boxes)
  det_v, det_j = [], []
  for i in range(0, t, speaker.batch_size):
    kp = jax.device_get(speaker.compiled.keypoints_fn(
        speaker.variables, frames[i:i + speaker.batch_size]))
    det_v.append(np.asarray(kp["value"]))
    det_j.append(np.asarray(kp["jacobian"]))
  det_v, det_j = np.concatenate(det_v), np.concatenate(det_j)
  out["kp_l1"] = float(np.abs(value - det_v).mean())
  out["jac_l1"] = float(np.abs(jac - det_j).mean())
  fake = speaker.render(image, value, jac)
  out["l1"] = float(np.mean(metrics.l1(frames, fake)))
  out["psnr"] = float(np.mean(metrics.psnr(frames, fake)))
  out["ssim"] = float(np.mean(metrics.ssim_gaussian(frames, fake)))
  # Head motion from the speech alone, against the real poses.
  predicted = speaker.poses(image, blocks)[1:t + 1]
  out.update(_motion_stats(predicted, "pred"))
  out.update(_motion_stats(real_poses, "real"))
  if out["real_rot_std"] > 0:
    out["motion_std_ratio"] = out["pred_rot_std"] / out["real_rot_std"]
  # Lip sync of the video made from the speech (predicted poses) and the real.
  # 4t rows of 25 ms windows every 10 ms: exactly t frames of speech.
  spoken = speaker.speak(image, samples[:400 + 160 * (4 * t - 1)], where=src)
  gen = mesh(spoken.frames[:t])
  out.update(_sync(gen.points, samples, 25.0, "sync_gen"))
  out.update(_sync(res.points, samples, fps, "sync_real"))
  if syncnet is not None:
    out.update(lse_scores(syncnet, spoken.frames[:t], gen.points, samples, 25.0, "lse"))
    out.update(lse_scores(syncnet, frames, res.points, samples, fps, "real_lse"))
  return out


def evaluate_speech(speaker, root: str, *, split: str = "test",
                    num_videos: int | None = None, max_frames: int | None = None,
                    progress: Callable[[str], None] | None = None,
                    syncnet=None) -> dict[str, Any]:
  """The protocol over ``root/split`` (VoxCeleb layout; clips with sound):
  ``{'protocol', 'per_video', 'mean', 'skipped', 'settings'}``; LSE-C/D
  with ``syncnet`` (:func:`dagan_jax.evaluation.syncnet.load`)."""
  from dagan_jax.face import mesh as mesh_lib  # pylint: disable=import-outside-toplevel
  from dagan_jax.input import clips as clips_lib  # pylint: disable=import-outside-toplevel
  if not mesh_lib.face_available():
    raise DataError('the speech protocol needs the face mesh: pip install -e ".[face]"')
  index = clips_lib.scan_split(root, split, "vox")
  names = [c.name for c in index.clips][:num_videos]
  if not names:
    raise DataError(f"no clips in {os.path.join(root, split)}")
  mesh = mesh_lib.FaceMesh()
  per_video = {}
  for i, name in enumerate(names):
    per_video[name] = evaluate_clip(speaker, index.path(i), max_frames=max_frames,
                                    mesh=mesh, syncnet=syncnet)
    if progress:
      progress(name)
  keys = sorted({k for v in per_video.values() for k in v})
  def finite_mean(values):
    values = [x for x in values if np.isfinite(x)]
    return float(np.mean(values)) if values else float("nan")

  # Lip-sync figures are NaN for clips too short to correlate (< 25 frames),
  # LSE for clips under 21 frames.
  mean = {k: finite_mean([v[k] for v in per_video.values() if k in v]) for k in keys}
  settings = {"root": root, "split": split, "pitch_tracker": speaker.pitch_tracker}
  if syncnet is not None:
    settings.update(syncnet=str(syncnet.source),
                    lse_crops="face mesh boxes (not S3FD)")
  return {"protocol": "speech", "per_video": per_video, "mean": mean,
          "metrics": keys, "generated_frames": int(sum(v["frames"] for v in per_video.values())),
          "skipped": {} if syncnet is not None else dict(LSE_SKIPPED),
          "settings": settings}
