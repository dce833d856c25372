"""Speech -> talking head: one face image animated by speech alone (Audio2Head).

The pipeline of Audio2Head (Wang et al., IJCAI 2021), as the released
inference runs it, with the same numbers:

1. **Speech features**: 41 values per 10 ms (:mod:`dagan_jax.audio.
   speech_features`, the model's pitch tracker), four rows per video frame
   at 25 fps: ``T = rows // 4`` frames, one per 40 ms of speech.
2. **Head motion** (``audio2pose``): ``T + 1`` poses from the image and the
   speech; frame ``t`` shows pose ``t`` (row 0 comes from the image alone).
   ``pose='still'`` holds row 0; a video gives its own poses instead
   (:func:`poses_from_video`, our face mesh and head-pose fit in the same
   camera).
3. **Pose boxes**: each pose drawn as Audio2Head's 3-D box
   (:mod:`dagan_jax.face.pose_boxes`).
4. **Keypoints** (``audio2kp``): windows of ``seq_len`` frames overlapping by
   half, speech beyond the end zero-padded, each frame's keypoints and
   Jacobians taken from the window that owns it (:func:`dagan_jax.models.
   audio2kp.window_plan`): exactly ``T`` frames, any length.
5. **Rendering**: the generator of the model (FOMM's for the released
   checkpoint) with the source encoded **once** (the official loop
   re-encodes it for every frame) and the frames in batches through one
   compiled function. Keypoints drive it as predicted (absolute, as the
   official code) or, with ``relative``, as motion relative to the first
   frame added to the source's keypoints.

Windows and frames go through fixed-size batches (the last one padded), so
speech of any length compiles each function once.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import numpy as np

from dagan_jax.errors import ConfigError, DataError

#: Speech rows per video frame (Audio2Head's 25 fps at 100 rows per second).
ROWS_PER_FRAME = 4
FPS = 25.0
#: The shortest speech that gives a frame: 4 rows of 25 ms windows every
#: 10 ms (python_speech_features zero-pads the last window).
MIN_SAMPLES = 400 + 2 * 160 + 1


@dataclasses.dataclass
class Speech:
  """What :meth:`Speaker.speak` made: ``frames`` (T, H, W, 3) float32 in
  [0, 1]; ``kp_value`` (T, K, 2) and ``kp_jacobian`` (T, K, 2, 2) the
  predicted keypoints; ``poses`` (T + 1, 6) rotation + translation;
  ``boxes`` (T + 1, 256, 256) the pose boxes; ``pitch_tracker``."""
  frames: np.ndarray
  kp_value: np.ndarray
  kp_jacobian: np.ndarray
  poses: np.ndarray
  boxes: np.ndarray
  pitch_tracker: str
  fps: float = FPS


def _resample_poses(poses: np.ndarray, n: int) -> np.ndarray:
  """``n`` pose rows from a video's (T', 6): row ``i`` of the video, the last
  one held when the video is shorter."""
  poses = np.asarray(poses, np.float32)
  idx = np.minimum(np.arange(n), len(poses) - 1)
  return poses[idx]


class Speaker:
  """An Audio2Head model directory's networks, compiled once.

  ``config`` must have ``audio2head_params``; ``variables`` hold
  ``audio2pose``, ``audio2kp``, ``kp_detector`` and ``generator`` (and the
  depth network when the renderer is a DaGAN one).
  """

  def __init__(self, config: Any, variables: Mapping[str, Any], *,
               batch_size: int = 8, window_batch: int = 1):
    from dagan_jax import compute  # pylint: disable=import-outside-toplevel
    from dagan_jax.inference.animate import compiled_model  # pylint: disable=import-outside-toplevel
    if "audio2head_params" not in config:
      raise ConfigError("the model has no audio2head_params: not a speech-driven "
                        "model (make one with `dagan-jax convert --audio2head`)")
    missing = [n for n in ("audio2pose", "audio2kp", "kp_detector", "generator")
               if n not in variables]
    if missing:
      raise ConfigError(f"the model lacks the networks {missing}")
    if batch_size < 1 or window_batch < 1:
      raise ConfigError("batch sizes must be >= 1")
    self.config = config
    self.variables = dict(variables)
    self.batch_size = int(batch_size)
    self.window_batch = int(window_batch)
    params = config["audio2head_params"]
    self.pitch_tracker = str(params["pitch_tracker"])
    self.compiled = compiled_model(config, inference_rewrites=True,
                                   use_depth_network="depth_encoder" in variables)
    models = self.compiled.models
    self.models = models
    self.seq_len = int(models.audio2kp.seq_len)
    if tuple(models.frame_shape[:2]) != (256, 256):
      raise ConfigError(f"Audio2Head works on 256x256 frames; the config says "
                        f"{list(models.frame_shape)}")
    jit = lambda f: compute.jit(  # noqa: E731
        f, kernels=str(config["compute"]["kernels"]), inference=True)
    self.pose_fn = jit(lambda v, image, audio: models.audio2pose.apply(v, image, audio))
    self.kp_fn = jit(lambda v, audio, boxes, image: models.audio2kp.apply(
        v, audio, boxes, image))

  @classmethod
  def from_checkpoint(cls, path, **kwargs) -> "Speaker":
    from dagan_jax import checkpoints  # pylint: disable=import-outside-toplevel
    config, variables = checkpoints.load_model(
        path, required=("audio2pose", "audio2kp", "kp_detector", "generator"))
    return cls(config, variables, **kwargs)

  # ------------------------------------------------------------------ steps

  def features(self, samples: np.ndarray, where: str = "speech") -> np.ndarray:
    """(T, 4, 41) speech blocks of 16 kHz int16 samples."""
    from dagan_jax.audio import speech_features  # pylint: disable=import-outside-toplevel
    from dagan_jax.models.audio2pose import audio_blocks  # pylint: disable=import-outside-toplevel
    rows, _ = speech_features.features_from_samples(samples, tracker=self.pitch_tracker,
                                                    where=where)
    blocks = audio_blocks(rows)
    if len(blocks) == 0:
      raise DataError(
          f"{where}: {len(samples)} samples ({len(samples) / 16000:.3f} s) of "
          f"speech give {len(rows)} feature rows of 10 ms; one video frame "
          f"needs {ROWS_PER_FRAME} (at least {MIN_SAMPLES} samples, "
          f"{MIN_SAMPLES / 16000:.3f} s)")
    return blocks

  def poses(self, image: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """(T + 1, 6) de-normalised poses predicted from the image and speech."""
    import jax  # pylint: disable=import-outside-toplevel

    from dagan_jax.models.audio2pose import denormalize_pose  # pylint: disable=import-outside-toplevel
    norm = jax.device_get(self.pose_fn(self.variables["audio2pose"], image[None],
                                       blocks[None]))[0]
    rot, trans = denormalize_pose(np.asarray(norm))
    return np.concatenate([rot, trans], axis=-1)

  def keypoints(self, image: np.ndarray, blocks: np.ndarray, boxes: np.ndarray,
                progress: Callable[[int], None] | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Stitched (T, K, 2) keypoints and (T, K, 2, 2) Jacobians."""
    import jax  # pylint: disable=import-outside-toplevel

    from dagan_jax.models import audio2kp  # pylint: disable=import-outside-toplevel
    t = len(blocks)
    plan = audio2kp.window_plan(t, self.seq_len)
    values, jacs = [], []
    wb = self.window_batch
    for i in range(0, len(plan), wb):
      part = plan[i:i + wb]
      aw, bw = audio2kp.window_inputs(blocks, boxes, part, self.seq_len)
      n = len(part)
      if n < wb:   # pad: one compiled shape
        aw = np.concatenate([aw, np.repeat(aw[-1:], wb - n, 0)])
        bw = np.concatenate([bw, np.repeat(bw[-1:], wb - n, 0)])
      ids = np.broadcast_to(image[None], (wb,) + image.shape)
      out = jax.device_get(self.kp_fn(self.variables["audio2kp"], aw, bw, ids))
      values.append(np.asarray(out["value"][:n]))
      jacs.append(np.asarray(out["jacobian"][:n]) if "jacobian" in out else None)
      if progress:
        progress(n)
    value = np.concatenate(values)
    jac = (np.concatenate(jacs) if jacs[0] is not None else
           np.broadcast_to(np.eye(2, dtype=np.float32), value.shape + (2,)))
    return audio2kp.stitch(value, jac, plan, t)

  def render(self, image: np.ndarray, kp_value: np.ndarray, kp_jacobian: np.ndarray,
             *, relative: bool = False,
             progress: Callable[[int], None] | None = None) -> np.ndarray:
    """(T, H, W, 3) frames from driving keypoints, source encoded once."""
    import jax  # pylint: disable=import-outside-toplevel
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    c = self.compiled
    source = c.source_fn(self.variables, jnp.asarray(image[None]))
    first = {"value": jnp.asarray(kp_value[:1]), "jacobian": jnp.asarray(kp_jacobian[:1])}
    out, b = [], self.batch_size
    for i in range(0, len(kp_value), b):
      v, j = kp_value[i:i + b], kp_jacobian[i:i + b]
      n = len(v)
      if n < b:
        v = np.concatenate([v, np.repeat(v[-1:], b - n, 0)])
        j = np.concatenate([j, np.repeat(j[-1:], b - n, 0)])
      res = c.render_fn(self.variables, source, {"value": v, "jacobian": j},
                        first, jnp.asarray(relative))
      out.append(np.asarray(jax.device_get(res["prediction"]))[:n])
      if progress:
        progress(n)
    return np.concatenate(out)

  # ------------------------------------------------------------------ all

  def speak(self, image: np.ndarray, samples: np.ndarray, *,
            pose: str | np.ndarray = "predicted", relative: bool = False,
            where: str = "speech", progress: Callable[[str, int, int], None] | None = None
            ) -> Speech:
    """The talking head of ``image`` (256, 256, 3) float in [0, 1] saying
    16 kHz int16 ``samples``. ``pose``: ``'predicted'``, ``'still'`` or an
    array (T', 6) of poses (e.g. :func:`poses_from_video`)."""
    from dagan_jax.face.pose_boxes import pose_boxes  # pylint: disable=import-outside-toplevel
    image = np.asarray(image, np.float32)
    if image.shape != (256, 256, 3):
      raise DataError(f"source image must be 256x256 RGB here, got {image.shape}")
    blocks = self.features(samples, where)
    t = len(blocks)
    if isinstance(pose, str) and pose == "predicted":
      poses = self.poses(image, blocks)
    elif isinstance(pose, str) and pose == "still":
      poses = np.repeat(self.poses(image, blocks[:1])[:1], t + 1, axis=0)
    elif isinstance(pose, str):
      raise ConfigError(f"pose is {pose!r}; expected 'predicted', 'still' or poses")
    else:
      poses = _resample_poses(pose, t + 1)
    boxes = pose_boxes(poses[:, :3], poses[:, 3:])
    plan_len = len(range(0, t, self.seq_len // 2))
    step = (lambda what, total: (lambda n: progress(what, n, total))) if progress else (
        lambda what, total: None)
    value, jac = self.keypoints(image, blocks, boxes, step("windows", plan_len))
    frames = self.render(image, value, jac, relative=relative,
                         progress=step("frames", t))
    return Speech(frames, value, jac, poses, boxes, self.pitch_tracker)


def poses_from_video(path: str, mesh=None) -> np.ndarray:
  """(T', 6) head poses of a video's face, in Audio2Head's camera (our face
  mesh and rigid fit, :mod:`dagan_jax.face.pose`); frames without a face
  take the nearest frame's pose. Raises :class:`DataError` naming the video
  when no frame has a face."""
  from dagan_jax.face import pose as pose_lib  # pylint: disable=import-outside-toplevel
  from dagan_jax.input import clip_faces, media  # pylint: disable=import-outside-toplevel
  res = clip_faces.mesh_clip(path, mesh)
  if not res.found.any():
    raise DataError(f"{path}: no face in any frame to take head poses from")
  hw = media.probe_video(path)[2]
  poses = pose_lib.head_poses(res.points, hw, res.found)
  good = np.flatnonzero(res.found)
  nearest = good[np.abs(np.arange(len(poses))[:, None] - good[None]).argmin(1)]
  return poses[nearest]
