"""Visual dubbing: a template video's mouth re-animated by new speech (IP_LAP).

The pipeline of IP_LAP (Zhong et al., CVPR 2023) as its released
``inference_single.py`` runs it, with the same numbers:

1. **Template** at 25 fps (another rate is resampled to the nearest frame in
   time; a still image is a one-frame template). The face mesh on every
   frame (:class:`dagan_jax.face.mesh.FaceMesh`, batched); its 131 IP_LAP
   points give each frame's crop box (their box plus 25 px), the 74 pose and
   57 content landmarks normalised to that box and the mouth openness
   (:mod:`dagan_jax.face.ip_lap_landmarks`). Frames where the mesh finds no
   face are filled in from their neighbours (linear in time; at most
   ``max_gap`` frames in a row, else an error naming the frames).
2. **References**: the frames sorted by mouth openness, ``Nl`` = 15 of them
   (evenly spread, torch's float32 ``linspace``) give the landmark
   generator's reference landmarks, ``N`` = 25 the renderer's reference
   faces and sketches.
3. **Speech**: IP_LAP's mel spectrogram, one 80 x 16 chunk per video frame
   (80 mel columns a second, chunk ``i`` from column ``int(i * 80 / 25)``);
   ``C`` chunks give ``C`` output frames.
4. **Plan** (:class:`DubPlan`): the official loop runs windows ``b = 0 ..
   C - 3`` of ``T`` = 5 frames ``b .. b + 4``; window frame ``j`` takes mel
   chunk ``max(0, j - 2)`` and template frame ``s(j)``, where ``s`` runs
   through the template forward, then backward, then forward again (the
   official ping-pong when the template is shorter than the speech). Window
   ``b`` renders the face of its centre frame ``b + 2`` with mel chunk
   ``b``; it becomes output frame ``b + 2``, and window 0 also fills output
   frames 0 and 1 (the official writer repeats the first frame twice).
   Speech of 1 or 2 chunks (which the official loop leaves empty) runs
   window 0 with its mel indices held at the last chunk.
5. **Landmarks**: the landmark generator predicts the 57 content points of
   every window's 5 frames from the mel chunks, the frames' pose landmarks
   and the references; windows go through one compiled function in
   batches.
6. **Rendering**: each window's 5 sketches (template pose + predicted
   content, drawn as the official ``draw_landmarks``), its centre frame's
   face crop (128 x 128, lower half masked by the renderer), the 25
   reference faces with their sketches, and the centre mel chunk go through
   the renderer, several frames per compiled call. The references are sent
   to the device once and shared by every frame of a call. IP_LAP's
   networks see **BGR** (the official code feeds cv2 frames): our RGB crops
   are flipped on the way in and the faces on the way out.
7. **Paste-back**: the generated face (quantised to uint8 as the official
   code) is resized into its crop box and blended into the template frame
   through the face contour (oval and eyebrows, as the official 68-point
   contour) of *our* face mesh, filled and feathered by a 21 x 21 Gaussian
   (sigma 11) as the official ``swap_masked_region``; the official code
   runs a second landmark detector (face_alignment) for that contour.

Frames are uint8 RGB (H, W, 3) at the template's resolution throughout.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from dagan_jax.errors import ConfigError, DataError
from dagan_jax.face import ip_lap_landmarks as lm

#: The most consecutive template frames without a face that are filled in
#: by interpolation (one second at 25 fps); a longer gap is an error.
MAX_GAP_FRAMES = 25
#: Positions in :data:`~dagan_jax.face.ip_lap_landmarks.ORI_SEQUENCE` of
#: the paste-back contour: the face oval from temple to temple round the
#: chin, and both eyebrows (the official 68-point jaw + eyebrow contour).
CONTOUR = tuple(range(0, 25)) + tuple(range(25, 45))
#: The official ``swap_masked_region``'s feathering of the mask.
BLEND_KERNEL = 21
BLEND_SIGMA = 11


# --------------------------------------------------------------------------
# The template


@dataclasses.dataclass
class Template:
  """A template at the dubbing rate and its faces.

  ``frames`` (L, H, W, 3) uint8 RGB; ``mesh131`` (L, 131, 2) float32 the
  IP_LAP points in image-normalised (x, y) (``x * W`` is pixels), in
  ``ORI_SEQUENCE`` order; ``found`` (L,) whether the mesh found the face
  (else the points are interpolated); ``boxes`` (L, 4) int64 crop boxes
  ``(y1, y2, x1, x2)``; ``landmarks`` (L, 2, 131) float32 the points
  normalised to the box, x row then y row, full-face order (74 pose then 57
  content); ``openness`` (L,) mouth openness. ``source_fps`` and
  ``source_frames`` describe the file before resampling.
  """
  frames: np.ndarray
  mesh131: np.ndarray
  found: np.ndarray
  boxes: np.ndarray
  landmarks: np.ndarray
  openness: np.ndarray
  where: str = "template"
  source_fps: float | None = None
  source_frames: int = 0

  def __len__(self) -> int:
    return len(self.frames)

  @property
  def frame_hw(self) -> tuple[int, int]:
    return int(self.frames.shape[1]), int(self.frames.shape[2])

  @property
  def interpolated(self) -> np.ndarray:
    """Indices of the frames whose face was interpolated."""
    return np.flatnonzero(~self.found)


def _nearest_source(k, ratio: float):
  """Source frame nearest in time to output frame ``k`` (``ratio`` = source
  fps / output fps): ``floor(k * ratio + 1/2)``."""
  return np.floor(np.asarray(k) * ratio + 0.5 + 1e-9).astype(np.int64)


def resample_indices(num_frames: int, fps: float | None, target_fps: float
                     ) -> np.ndarray:
  """Source frame shown at each output frame when a clip of ``num_frames``
  at ``fps`` is played at ``target_fps``: the nearest frame in time,
  ``floor(k * fps / target + 1/2)``, for every ``k`` whose frame exists.
  ``fps`` None (frame folders, arrays) or equal to the target: every frame."""
  if num_frames < 1:
    return np.zeros((0,), np.int64)
  if fps is None or not fps > 0 or abs(fps - target_fps) < 1e-6:
    return np.arange(num_frames)
  ratio = float(fps) / float(target_fps)
  count = max(1, math.ceil((num_frames - 0.5) / ratio - 1e-9))
  idx = _nearest_source(np.arange(count), ratio)
  return idx[idx <= num_frames - 1]


def _rgb_uint8(frame: np.ndarray, where: str) -> np.ndarray:
  from dagan_jax.input import media  # pylint: disable=import-outside-toplevel
  if frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3:
    return frame
  return np.rint(media.to_float_rgb(frame, where) * 255.0).astype(np.uint8)


def read_template_frames(path: str | os.PathLike, fps: float = 25.0
                         ) -> tuple[np.ndarray, float | None, int]:
  """``(frames (L, H, W, 3) uint8 RGB at fps, source fps, source frames)``.

  An image file (``.png``, ``.jpg``, ...) is a one-frame template; a video
  (or GIF) is resampled to ``fps`` while it is decoded (the nearest frame
  in time, :func:`resample_indices`); a frame folder or ``.npy`` has no
  rate and is taken as ``fps``."""
  from dagan_jax.input import media  # pylint: disable=import-outside-toplevel
  where = str(path)
  if os.path.isfile(where) and os.path.splitext(where)[1].lower() in media.IMAGE_EXTS:
    img = np.rint(media.read_image(where) * 255.0).astype(np.uint8)
    return img[None], None, 1
  kind = media.clip_kind(where)
  src_fps = media.probe_video(where)[1] if kind in ("video", "gif") else None
  ratio = (None if src_fps is None or abs(src_fps - fps) < 1e-6
           else float(src_fps) / float(fps))
  out, k, n = [], 0, 0
  for i, frame in media.iter_native_frames(where, kind=kind):
    n = i + 1
    frame = _rgb_uint8(frame, where)
    if ratio is None:
      out.append(frame)
      continue
    while _nearest_source(k, ratio) == i:
      out.append(frame)
      k += 1
  if not out:
    raise DataError(f"{where}: no frames")
  shapes = {f.shape for f in out}
  if len(shapes) > 1:
    raise DataError(f"{where}: frames differ in size: {sorted(shapes)}")
  return np.stack(out), src_fps, n


def fill_gaps(values: np.ndarray, found: np.ndarray, *, max_gap: int,
              where: str) -> np.ndarray:
  """``values`` (L, ...) with the rows where ``found`` is False filled in:
  linearly between the found rows on either side, or the nearest found row
  at either end. Raises :class:`DataError` naming ``where`` when no row is
  found or a run of missing rows is longer than ``max_gap``."""
  found = np.asarray(found, bool)
  n = len(found)
  good = np.flatnonzero(found)
  if good.size == 0:
    raise DataError(f"{where}: no face found in any of its {n} frame"
                    f"{'s' if n != 1 else ''} (the face mesh needs one clear, "
                    "reasonably large face)")
  missing = np.flatnonzero(~found)
  if missing.size:
    runs = np.split(missing, np.flatnonzero(np.diff(missing) > 1) + 1)
    long = [r for r in runs if len(r) > max_gap]
    if long:
      spans = ", ".join(f"{r[0]}-{r[-1]}" for r in long[:5])
      raise DataError(
          f"{where}: no face in frames {spans} (counted at the dubbing rate; "
          f"{sum(len(r) for r in long)} frames in runs longer than {max_gap}): "
          f"gaps of up to {max_gap} frames are interpolated; trim the template "
          "to a part where the face is visible")
  out = np.array(values, copy=True)
  flat = out.reshape(n, -1)
  for col in range(flat.shape[1]):
    flat[:, col] = np.interp(np.arange(n), good, flat[good, col])
  return flat.reshape(out.shape)


def template_from_mesh(frames: np.ndarray, mesh131: np.ndarray, found: np.ndarray,
                       *, where: str = "template", max_gap: int = MAX_GAP_FRAMES,
                       source_fps: float | None = None,
                       source_frames: int | None = None) -> Template:
  """A :class:`Template` from frames and their 131 IP_LAP points
  ((L, 131, 2) image-normalised, ``ORI_SEQUENCE`` order; rows where
  ``found`` is False are filled in by :func:`fill_gaps`): crop boxes,
  crop-normalised landmarks and mouth openness as the official inference."""
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise DataError(f"{where}: expected (L, H, W, 3) uint8 frames, got "
                    f"{frames.shape} {frames.dtype}")
  mesh131 = np.asarray(mesh131, np.float32)
  if mesh131.shape != (len(frames), len(lm.ORI_SEQUENCE), 2):
    raise ValueError(f"mesh131 must be (L, 131, 2) for {len(frames)} frames; "
                     f"got {mesh131.shape}")
  found = np.asarray(found, bool)
  mesh131 = fill_gaps(mesh131, found, max_gap=max_gap, where=where)
  hw = frames.shape[1:3]
  boxes = np.array([lm.crop_box(m, hw) for m in mesh131], np.int64)
  landmarks = np.stack([lm.crop_landmarks(m, hw, b)
                        for m, b in zip(mesh131, boxes)])
  openness = np.array([lm.lip_openness(m) for m in mesh131])
  return Template(frames, mesh131, found, boxes, landmarks, openness, where,
                  source_fps, len(frames) if source_frames is None else int(source_frames))


def mesh131_of(points: np.ndarray, frame_hw: Sequence[int]) -> np.ndarray:
  """The 131 IP_LAP points, image-normalised, of face-mesh points (N, 468,
  2+) in pixels of frames ``(H, W)``."""
  h, w = (int(v) for v in frame_hw)
  pts = np.asarray(points)[:, list(lm.ORI_SEQUENCE), :2].astype(np.float64)
  return (pts / np.array([w, h], np.float64)).astype(np.float32)


def make_template(frames: np.ndarray, *, mesh: Any = None,
                  mesh131: np.ndarray | None = None, where: str = "template",
                  max_gap: int = MAX_GAP_FRAMES, source_fps: float | None = None,
                  source_frames: int | None = None,
                  progress: Callable[[int], None] | None = None) -> Template:
  """A :class:`Template` of (L, H, W, 3) uint8 RGB frames at the dubbing
  rate: their faces from the face ``mesh`` (a :class:`~dagan_jax.face.mesh.
  FaceMesh`, made when None; run in its batches, ``progress(n)`` after
  each), or from ``mesh131`` (L, 131, 2) image-normalised points when given
  (e.g. another mesh's)."""
  from dagan_jax.face import mesh as mesh_lib  # pylint: disable=import-outside-toplevel
  frames = np.asarray(frames)
  if mesh131 is None:
    res = mesh_lib.mesh_frames(iter(frames), mesh or mesh_lib.FaceMesh(),
                               progress=progress, where=where)
    found = res.found
    pts = np.where(found[:, None, None], res.points[..., :2], 0.0)
    mesh131 = mesh131_of(pts, frames.shape[1:3])
  else:
    found = np.ones(len(frames), bool)
  return template_from_mesh(frames, mesh131, found, where=where, max_gap=max_gap,
                            source_fps=source_fps, source_frames=source_frames)


def speech_chunks(samples: np.ndarray, *, fps: float = 25.0, mel_step: int = 16,
                  where: str = "speech") -> np.ndarray:
  """(C, 80, 16) float32 mel chunks of 16 kHz int16 ``samples``, one per
  output frame (:func:`dagan_jax.audio.mel.mel_chunks`). Raises
  :class:`DataError` naming ``where`` when the speech is shorter than one
  chunk."""
  from dagan_jax.audio import io as audio_io  # pylint: disable=import-outside-toplevel
  from dagan_jax.audio import mel as mel_lib  # pylint: disable=import-outside-toplevel
  samples = np.asarray(samples)
  spec = mel_lib.melspectrogram(audio_io.to_float(samples))
  chunks = mel_lib.mel_chunks(spec, fps)
  if len(chunks) == 0:
    need = (mel_step - 1) * mel_lib.HOP
    raise DataError(
        f"{where}: {len(samples)} samples ({len(samples) / 16000:.3f} s) of "
        f"speech give {spec.shape[1]} mel columns; one video frame needs a "
        f"window of {mel_step} (at least {need} samples, {need / 16000:.4f} s)")
  return chunks


# --------------------------------------------------------------------------
# The plan


@dataclasses.dataclass(frozen=True)
class DubPlan:
  """Which mel chunk and template frame every window frame takes, and which
  window every output frame shows (module docstring, step 4).

  ``mel_index`` (W, T) and ``frame_index`` (W, T) for ``W`` windows;
  ``output_window`` (C,) the window of each output frame; ``centre`` the
  rendered position in a window (``T // 2``)."""
  mel_index: np.ndarray
  frame_index: np.ndarray
  output_window: np.ndarray
  centre: int

  @property
  def num_windows(self) -> int:
    return len(self.mel_index)

  @property
  def num_frames(self) -> int:
    return len(self.output_window)

  @property
  def output_template_frame(self) -> np.ndarray:
    """(C,) the template frame behind each output frame."""
    return self.frame_index[self.output_window, self.centre]


def ping_pong(index: np.ndarray, length: int) -> np.ndarray:
  """Template frame at position ``index`` of the official sequence
  ``[0 .. L-1, L-1 .. 0] * k``."""
  r = np.asarray(index) % (2 * length)
  return np.where(r < length, r, 2 * length - 1 - r)


def make_plan(num_chunks: int, template_len: int, T: int = 5) -> DubPlan:  # noqa: N803
  """The official loop's windows for ``num_chunks`` mel chunks over a
  template of ``template_len`` frames (module docstring, step 4)."""
  if num_chunks < 1 or template_len < 1:
    raise ValueError(f"need at least one mel chunk and one template frame; "
                     f"got {num_chunks}, {template_len}")
  c = T // 2
  windows = max(1, num_chunks - c)
  j = np.arange(windows)[:, None] + np.arange(T)[None, :]
  mel = np.clip(j - c, 0, num_chunks - 1)
  out = np.clip(np.arange(num_chunks) - c, 0, windows - 1)
  return DubPlan(mel, ping_pong(j, template_len), out, c)


def interpolated_output_frames(template: Template, plan: DubPlan) -> int:
  """How many output frames show a template frame whose face was
  interpolated (the mesh found none there)."""
  return int((~template.found[plan.output_template_frame]).sum())


# --------------------------------------------------------------------------
# What the renderer sees


@dataclasses.dataclass
class References:
  """The reference frames: ``landmark_frames`` (Nl,) and ``image_frames``
  (N,) template indices; ``pose`` (Nl, 74, 2) and ``content`` (Nl, 57, 2)
  their landmarks (the landmark generator's layout); ``images`` (N, S, S, 3)
  float32 **BGR** face crops; ``sketches`` (N, S, S, 3) their sketches."""
  landmark_frames: np.ndarray
  image_frames: np.ndarray
  pose: np.ndarray
  content: np.ndarray
  images: np.ndarray
  sketches: np.ndarray


def face_crop(frame: np.ndarray, box: Sequence[int], size: int) -> np.ndarray:
  """The renderer's view of a face: the crop ``box`` of an RGB uint8 frame
  resized (bilinear) to ``size`` x ``size``, **BGR**, float32 ``u8 / 255``."""
  import cv2  # pylint: disable=import-outside-toplevel
  y1, y2, x1, x2 = (int(v) for v in box)
  crop = cv2.resize(np.ascontiguousarray(frame[y1:y2, x1:x2]), (size, size))
  return (crop[..., ::-1] / 255.0).astype(np.float32)


def _crop_hw(box: Sequence[int]) -> tuple[int, int]:
  y1, y2, x1, x2 = (int(v) for v in box)
  return y2 - y1, x2 - x1


def face_mask(mesh131: np.ndarray, frame_hw: Sequence[int]) -> np.ndarray:
  """(H, W) float64 in [0, 1]: the face contour (:data:`CONTOUR`, its convex
  hull) filled and feathered as the official ``swap_masked_region``."""
  import cv2  # pylint: disable=import-outside-toplevel
  h, w = (int(v) for v in frame_hw)
  pts = (np.asarray(mesh131, np.float64)[list(CONTOUR)] * [w, h]).astype(np.int32)
  mask = np.zeros((h, w), np.uint8)
  cv2.fillConvexPoly(mask, cv2.convexHull(pts), 255)
  mask = cv2.GaussianBlur(mask, (BLEND_KERNEL, BLEND_KERNEL), BLEND_SIGMA)
  return mask / 255.0


def paste_face(frame: np.ndarray, face: np.ndarray, box: Sequence[int],
               mesh131: np.ndarray) -> np.ndarray:
  """The template ``frame`` (uint8 RGB) with the generated ``face`` (S, S, 3)
  RGB float in [0, 1] pasted into ``box`` and blended through the face
  contour of ``mesh131``; quantised as the official code (truncation)."""
  import cv2  # pylint: disable=import-outside-toplevel
  y1, y2, x1, x2 = (int(v) for v in box)
  face_u8 = (np.asarray(face) * 255).astype(np.uint8)
  pasted = frame.copy()
  pasted[y1:y2, x1:x2] = cv2.resize(face_u8, (x2 - x1, y2 - y1))
  mask = face_mask(mesh131, frame.shape[:2])[..., None]
  return (pasted * mask + frame * (1 - mask)).astype(np.uint8)


@dataclasses.dataclass
class Dub:
  """What :meth:`Dubber.dub` made. ``composites`` (W, H, W', 3) uint8 RGB:
  each window's face pasted into its template frame; ``frames`` (C, ...)
  the output video (``composites[plan.output_window]``); ``faces`` (W, S,
  S, 3) RGB generated faces; ``sketches`` (W, S, S, 3) each window's
  centre sketch; ``content`` (W, T, 57, 2) the predicted content
  landmarks; ``interpolated_frames``: output frames whose template face was
  interpolated (no face found by the mesh)."""
  composites: np.ndarray
  faces: np.ndarray
  sketches: np.ndarray
  content: np.ndarray
  plan: DubPlan
  references: References
  interpolated_frames: int
  fps: float = 25.0

  @property
  def frames(self) -> np.ndarray:
    return self.composites[self.plan.output_window]


def _pad(x: np.ndarray, n: int) -> np.ndarray:
  """``x`` with its last row repeated up to ``n`` rows (one compiled shape)."""
  if len(x) >= n:
    return x
  return np.concatenate([x, np.repeat(x[-1:], n - len(x), axis=0)])


class Dubber:
  """An IP_LAP model directory's two networks, compiled once.

  ``config`` must have ``ip_lap_params``; ``variables`` hold
  ``ip_lap_landmark`` and ``ip_lap_renderer``. ``batch_size`` frames per
  renderer call, ``window_batch`` windows per landmark-generator call;
  ``mesh`` a :class:`~dagan_jax.face.mesh.FaceMesh` (made when first
  needed); ``max_gap`` the longest run of faceless template frames filled
  in.
  """

  def __init__(self, config: Any, variables: Mapping[str, Any], *,
               batch_size: int = 2, window_batch: int = 32, mesh: Any = None,
               max_gap: int = MAX_GAP_FRAMES):
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

    from dagan_jax import compute  # pylint: disable=import-outside-toplevel
    from dagan_jax.models.build import build_models  # pylint: disable=import-outside-toplevel
    if config.get("ip_lap_params") is None:
      raise ConfigError("the model has no ip_lap_params: not an IP_LAP model "
                        "(make one with `dagan-jax convert --ip-lap-landmark "
                        "L.pth --ip-lap-renderer R.pth`)")
    missing = [n for n in ("ip_lap_landmark", "ip_lap_renderer") if n not in variables]
    if missing:
      raise ConfigError(f"the model lacks the networks {missing}")
    if batch_size < 1 or window_batch < 1 or max_gap < 0:
      raise ConfigError("batch sizes must be >= 1 and max_gap >= 0")
    p = config["ip_lap_params"]
    if int(p["img_size"]) != lm.SKETCH_SIZE:
      raise ConfigError(f"ip_lap_params.img_size is {p['img_size']}; dubbing "
                        f"draws the sketches at {lm.SKETCH_SIZE} x "
                        f"{lm.SKETCH_SIZE} as the official inference")
    models = build_models(config)
    self.config = config
    self.variables = {k: variables[k] for k in ("ip_lap_landmark", "ip_lap_renderer")}
    self.landmark_net = models.ip_lap_landmark
    self.renderer_net = models.ip_lap_renderer
    self.T = int(p["T"])
    self.Nl, self.N = int(p["Nl"]), int(p["N"])
    self.img_size = int(p["img_size"])
    self.mel_step = int(p["mel_step"])
    self.fps = float(p["fps"])
    self.batch_size = int(batch_size)
    self.window_batch = int(window_batch)
    self.max_gap = int(max_gap)
    self._mesh = mesh
    jit = lambda f: compute.jit(  # noqa: E731
        f, kernels=str(config["compute"]["kernels"]), inference=True)
    landmark_net, renderer_net = self.landmark_net, self.renderer_net

    def landmarks(v, mels, pose, ref_pose, ref_content):
      b = mels.shape[0]
      shared = lambda x: jnp.broadcast_to(x[None], (b,) + x.shape)  # noqa: E731
      return landmark_net.apply(v, mels, pose, shared(ref_pose), shared(ref_content))

    def render(v, face, target, ref_images, ref_sketches, mel):
      b = face.shape[0]
      shared = lambda x: jnp.broadcast_to(x[None], (b,) + x.shape)  # noqa: E731
      generated, _ = renderer_net.apply(v, face, target, shared(ref_images),
                                        shared(ref_sketches), mel)
      return generated

    self.landmark_fn = jit(landmarks)
    self.render_fn = jit(render)

  @classmethod
  def from_checkpoint(cls, path, **kwargs) -> "Dubber":
    from dagan_jax import checkpoints  # pylint: disable=import-outside-toplevel
    config, variables = checkpoints.load_model(
        path, required=("ip_lap_landmark", "ip_lap_renderer"))
    if config.get("ip_lap_params") is None:
      raise ConfigError(f"{path}: the model has no ip_lap_params: not an IP_LAP "
                        "model (make one with `dagan-jax convert "
                        "--ip-lap-landmark L.pth --ip-lap-renderer R.pth`)")
    return cls(config, variables, **kwargs)

  # ------------------------------------------------------------ template

  @property
  def mesh(self):
    if self._mesh is None:
      from dagan_jax.face.mesh import FaceMesh  # pylint: disable=import-outside-toplevel
      self._mesh = FaceMesh()
    return self._mesh

  def template(self, path: str | os.PathLike,
               progress: Callable[[int], None] | None = None) -> Template:
    """The template at ``path`` (video, frame folder, ``.npy`` or still
    image) at the model's fps, with its faces."""
    frames, src_fps, n = read_template_frames(path, self.fps)
    return self.template_from_frames(frames, where=str(path), source_fps=src_fps,
                                     source_frames=n, progress=progress)

  def template_from_frames(self, frames: np.ndarray, *, where: str = "template",
                           mesh131: np.ndarray | None = None,
                           source_fps: float | None = None,
                           source_frames: int | None = None,
                           progress: Callable[[int], None] | None = None
                           ) -> Template:
    """:func:`make_template` with this dubber's face mesh and ``max_gap``."""
    return make_template(frames, mesh=None if mesh131 is not None else self.mesh,
                         mesh131=mesh131, where=where, max_gap=self.max_gap,
                         source_fps=source_fps, source_frames=source_frames,
                         progress=progress)

  # ------------------------------------------------------------ speech

  def mel_chunks(self, samples: np.ndarray, where: str = "speech") -> np.ndarray:
    """:func:`speech_chunks` at this model's fps."""
    return speech_chunks(samples, fps=self.fps, mel_step=self.mel_step, where=where)

  def plan(self, num_chunks: int, template_len: int) -> DubPlan:
    return make_plan(num_chunks, template_len, self.T)

  # ------------------------------------------------------------ references

  def references(self, template: Template) -> References:
    """The official reference choice by mouth openness (among the frames
    where the mesh found the face), their landmarks, faces and sketches."""
    cand = np.flatnonzero(template.found)
    nl = cand[lm.reference_frames(template.openness[cand], self.Nl)]
    ni = cand[lm.reference_frames(template.openness[cand], self.N)]
    pts = template.landmarks.transpose(0, 2, 1)  # (L, 131, 2)
    images = np.stack([face_crop(template.frames[i], template.boxes[i], self.img_size)
                       for i in ni])
    sketches = np.stack([lm.sketch(template.landmarks[i], _crop_hw(template.boxes[i]))
                         for i in ni])
    return References(nl, ni, pts[nl, :lm.NUM_POSE], pts[nl, lm.NUM_POSE:],
                      images, sketches)

  # ------------------------------------------------------------ landmarks

  def landmark_inputs(self, template: Template, chunks: np.ndarray, plan: DubPlan,
                      windows: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """``(mels (n, T, 80, 16, 1), pose (n, T, 74, 2))`` of ``windows``."""
    w = np.asarray(windows, np.int64)
    mels = chunks[plan.mel_index[w]][..., None]
    pose = template.landmarks[plan.frame_index[w]][..., :lm.NUM_POSE]
    return mels.astype(np.float32), np.swapaxes(pose, -1, -2).astype(np.float32)

  def landmarks(self, template: Template, chunks: np.ndarray, plan: DubPlan,
                refs: References, progress: Callable[[int], None] | None = None
                ) -> np.ndarray:
    """(W, T, 57, 2) predicted content landmarks (jaw then lips) of every
    window, ``window_batch`` windows per compiled call."""
    out, wb = [], self.window_batch
    v = self.variables["ip_lap_landmark"]
    ref_pose = refs.pose.astype(np.float32)
    ref_content = refs.content.astype(np.float32)
    for i in range(0, plan.num_windows, wb):
      windows = np.arange(i, min(i + wb, plan.num_windows))
      mels, pose = self.landmark_inputs(template, chunks, plan, windows)
      res = self.landmark_fn(v, _pad(mels, wb), _pad(pose, wb), ref_pose,
                             ref_content)
      out.append(np.asarray(res)[:len(windows)])
      if progress:
        progress(len(windows))
    return np.concatenate(out)

  # ------------------------------------------------------------ rendering

  def render_inputs(self, template: Template, chunks: np.ndarray, plan: DubPlan,
                    content: np.ndarray, windows: Sequence[int]
                    ) -> dict[str, np.ndarray]:
    """The renderer's per-frame inputs of ``windows`` (faces and sketches
    as the networks see them, BGR): ``face`` (n, S, S, 3) the centre frame's
    crop, ``target`` (n, T, S, S, 3) the window's sketches of template pose +
    predicted ``content`` (W, T, 57, 2), ``mel`` (n, 80, 16) the centre mel
    chunk."""
    faces, targets, mels = [], [], []
    c = plan.centre
    for b in windows:
      frames = plan.frame_index[b]
      sk = []
      for t, f in enumerate(frames):
        full = np.concatenate([template.landmarks[f][:, :lm.NUM_POSE],
                               np.asarray(content[b, t], np.float32).T], axis=1)
        sk.append(lm.sketch(full, _crop_hw(template.boxes[f])))
      targets.append(np.stack(sk))
      f = frames[c]
      faces.append(face_crop(template.frames[f], template.boxes[f], self.img_size))
      mels.append(chunks[plan.mel_index[b, c]])
    return {"face": np.stack(faces), "target": np.stack(targets),
            "mel": np.stack(mels).astype(np.float32)}

  def render(self, template: Template, chunks: np.ndarray, plan: DubPlan,
             content: np.ndarray, refs: References,
             windows: Sequence[int] | None = None,
             progress: Callable[[int], None] | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """``(faces (n, S, S, 3) RGB float32 in (0, 1), centre sketches (n, S,
    S, 3))`` of ``windows`` (default all), ``batch_size`` per compiled call."""
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    windows = np.arange(plan.num_windows) if windows is None else np.asarray(windows)
    v = self.variables["ip_lap_renderer"]
    ref_images = jnp.asarray(refs.images)
    ref_sketches = jnp.asarray(refs.sketches)
    faces, sketches, b = [], [], self.batch_size
    for i in range(0, len(windows), b):
      part = windows[i:i + b]
      x = self.render_inputs(template, chunks, plan, content, part)
      out = self.render_fn(v, _pad(x["face"], b), _pad(x["target"], b),
                           ref_images, ref_sketches, _pad(x["mel"], b))
      faces.append(np.asarray(out)[:len(part), ..., ::-1])
      sketches.append(x["target"][:, plan.centre])
      if progress:
        progress(len(part))
    return np.concatenate(faces), np.concatenate(sketches)

  def composite(self, template: Template, plan: DubPlan, faces: np.ndarray,
                windows: Sequence[int] | None = None) -> np.ndarray:
    """Each window's face pasted into its centre template frame (uint8)."""
    windows = np.arange(plan.num_windows) if windows is None else np.asarray(windows)
    out = []
    for face, b in zip(faces, windows):
      f = plan.frame_index[b, plan.centre]
      out.append(paste_face(template.frames[f], face, template.boxes[f],
                            template.mesh131[f]))
    return np.stack(out)

  # ------------------------------------------------------------ all

  def dub(self, template: Template, samples: np.ndarray, *, where: str = "speech",
          progress: Callable[[str, int, int], None] | None = None) -> Dub:
    """``template`` saying 16 kHz int16 ``samples``: one output frame per
    mel chunk, at the model's fps. ``progress(what, n, total)`` with
    ``what`` 'landmarks' (windows done) then 'rendering' (faces done)."""
    chunks = self.mel_chunks(samples, where)
    plan = self.plan(len(chunks), len(template))
    step = ((lambda what, total: (lambda n: progress(what, n, total)))
            if progress else (lambda what, total: None))
    refs = self.references(template)
    content = self.landmarks(template, chunks, plan, refs,
                             step("landmarks", plan.num_windows))
    faces, sketches = self.render(template, chunks, plan, content, refs,
                                  progress=step("rendering", plan.num_windows))
    composites = self.composite(template, plan, faces)
    return Dub(composites, faces, sketches, content, plan, refs,
               interpolated_output_frames(template, plan), self.fps)


def side_by_side(template: Template, dub: Dub) -> np.ndarray:
  """(C, H, 3W, 3) uint8: template frame | the centre sketch in its crop
  box | result, for every output frame."""
  import cv2  # pylint: disable=import-outside-toplevel
  plan = dub.plan
  panels = []
  for b in range(plan.num_windows):
    f = plan.frame_index[b, plan.centre]
    y1, y2, x1, x2 = (int(v) for v in template.boxes[f])
    sk = np.zeros_like(template.frames[f])
    drawn = cv2.resize(dub.sketches[b], (x2 - x1, y2 - y1))
    sk[y1:y2, x1:x2] = np.clip(drawn * 255.0 + 0.5, 0, 255).astype(np.uint8)
    panels.append(np.concatenate([template.frames[f], sk, dub.composites[b]],
                                 axis=1))
  return np.stack(panels)[plan.output_window]
