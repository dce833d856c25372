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

**Renderer size.** The speech networks live in Audio2Head's fixed 256 x 256
camera (pose boxes, audio2kp's identity input), and the keypoints are
normalised (x, y) in [-1, 1], so a renderer of any frame size can be
driven. The source is given at 256 x 256; the renderer gets it resized to
its own frame size (:func:`~dagan_jax.inference.animate.resize_frames`,
area interpolation when shrinking: anti-aliased), and the frames come out
at that size. With a renderer of another size than 256 the speech networks
see the source as their trainers showed it to them
(:mod:`dagan_jax.training.audio2pose`, :mod:`dagan_jax.training.audio2kp`),
which read the prepared crops at the renderer's size: audio2pose the
renderer-size image itself, audio2kp that image enlarged bilinearly to
256 x 256 (:func:`source_views`). For a 256 x 256 renderer (the released
model) all three are the source as given.

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
#: Audio2Head's image size: the source, the pose boxes, audio2kp's identity.
A2H_SIZE = 256


@dataclasses.dataclass
class Speech:
  """What :meth:`Speaker.speak` made: ``frames`` (T, H, W, 3) float32 in
  [0, 1] at the renderer's frame size; ``kp_value`` (T, K, 2) and
  ``kp_jacobian`` (T, K, 2, 2) the predicted keypoints; ``poses`` (T + 1,
  6) rotation + translation; ``boxes`` (T + 1, 256, 256) the pose boxes;
  ``pitch_tracker``."""
  frames: np.ndarray
  kp_value: np.ndarray
  kp_jacobian: np.ndarray
  poses: np.ndarray
  boxes: np.ndarray
  pitch_tracker: str
  fps: float = FPS


@dataclasses.dataclass
class SourceViews:
  """The one source image as each network takes it (module docstring):
  ``render`` (H, W, 3) at the renderer's frame size, ``pose`` audio2pose's
  image, ``identity`` (256, 256, 3) audio2kp's."""
  render: np.ndarray
  pose: np.ndarray
  identity: np.ndarray


def source_views(image: np.ndarray, frame_hw: tuple[int, int],
                   where: str = "source") -> SourceViews:
  """:class:`SourceViews` of a (256, 256, 3) float source for a renderer of
  ``frame_hw``: all three the source itself at 256 x 256; otherwise the
  renderer's view anti-aliased to its size, which audio2pose also reads,
  and audio2kp's the renderer's view enlarged bilinearly back to 256 (as
  :func:`dagan_jax.training.audio2kp.identity_image` in training)."""
  import jax  # pylint: disable=import-outside-toplevel

  from dagan_jax.inference.animate import resize_frames  # pylint: disable=import-outside-toplevel
  hw = (int(frame_hw[0]), int(frame_hw[1]))
  if hw == (A2H_SIZE, A2H_SIZE):
    return SourceViews(image, image, image)
  small = resize_frames(image[None], hw, where=where)[0]
  big = np.asarray(jax.image.resize(small, (A2H_SIZE, A2H_SIZE, 3), "bilinear"),
                   np.float32)
  return SourceViews(small, small, big)


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
  depth network when the renderer is a DaGAN one). The renderer may have
  any frame size (``frame_hw``; module docstring).
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
    self.frame_hw = (int(models.frame_shape[0]), int(models.frame_shape[1]))
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
    """(T + 1, 6) de-normalised poses predicted from audio2pose's view of
    the source (:class:`SourceViews` ``pose``) and the speech."""
    import jax  # pylint: disable=import-outside-toplevel

    from dagan_jax.models.audio2pose import denormalize_pose  # pylint: disable=import-outside-toplevel
    norm = jax.device_get(self.pose_fn(self.variables["audio2pose"], image[None],
                                       blocks[None]))[0]
    rot, trans = denormalize_pose(np.asarray(norm))
    return np.concatenate([rot, trans], axis=-1)

  def keypoints(self, image: np.ndarray, blocks: np.ndarray, boxes: np.ndarray,
                progress: Callable[[int], None] | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Stitched (T, K, 2) keypoints and (T, K, 2, 2) Jacobians from
    audio2kp's (256, 256, 3) view of the source (:class:`SourceViews`
    ``identity``), the speech blocks and the (T + 1, 256, 256) pose boxes."""
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
    """(T, H, W, 3) frames from driving keypoints, source encoded once;
    ``image`` at the renderer's frame size (:class:`SourceViews` ``render``)."""
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
    16 kHz int16 ``samples``: frames at the renderer's frame size, one per
    40 ms of speech. ``pose``: ``'predicted'``, ``'still'`` or an array
    (T', 6) of poses (e.g. :func:`poses_from_video`)."""
    from dagan_jax.face.pose_boxes import pose_boxes  # pylint: disable=import-outside-toplevel
    image = np.asarray(image, np.float32)
    if image.shape != (A2H_SIZE, A2H_SIZE, 3):
      raise DataError(f"source image must be {A2H_SIZE}x{A2H_SIZE} RGB here "
                      f"(Audio2Head's camera), got {image.shape}")
    views = source_views(image, self.frame_hw)
    blocks = self.features(samples, where)
    t = len(blocks)
    if isinstance(pose, str) and pose == "predicted":
      poses = self.poses(views.pose, blocks)
    elif isinstance(pose, str) and pose == "still":
      poses = np.repeat(self.poses(views.pose, blocks[:1])[:1], t + 1, axis=0)
    elif isinstance(pose, str):
      raise ConfigError(f"pose is {pose!r}; expected 'predicted', 'still' or poses")
    else:
      poses = _resample_poses(pose, t + 1)
    boxes = pose_boxes(poses[:, :3], poses[:, 3:])
    plan_len = len(range(0, t, self.seq_len // 2))
    step = (lambda what, total: (lambda n: progress(what, n, total))) if progress else (
        lambda what, total: None)
    value, jac = self.keypoints(views.identity, blocks, boxes,
                                step("windows", plan_len))
    frames = self.render(views.render, value, jac, relative=relative,
                         progress=step("frames", t))
    return Speech(frames, value, jac, poses, boxes, self.pitch_tracker)


def side_by_side(source: np.ndarray, speech: Speech) -> np.ndarray:
  """(T, S, 3S, 3) float: source | pose box | result, S the source's size
  (256); frames of a smaller renderer are enlarged nearest-neighbour, so
  their pixels show as they are."""
  frames = np.asarray(speech.frames, np.float32)
  t, h, w = frames.shape[:3]
  s = source.shape[0]
  if (h, w) != (s, s):
    frames = frames[:, np.arange(s) * h // s][:, :, np.arange(s) * w // s]
  boxes = np.repeat(speech.boxes[:t, :, :, None] / 255.0, 3, axis=-1)
  return np.concatenate([np.broadcast_to(source, frames.shape),
                         boxes.astype(np.float32), frames], axis=2)


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
