"""``evaluate --protocol dubbing``: IP_LAP's reconstruction setting.

Every clip of ``ROOT/<split>`` with sound (VoxCeleb layout; its sound from
:func:`dagan_jax.audio.sources.audio_source`) is dubbed with its **own**
speech, using itself as the template (:class:`dagan_jax.inference.dub.
Dubber`; IP_LAP, Zhong et al. CVPR 2023, evaluates its reconstruction
this way), so the real clip is the ground truth of the dub.

**Frames.** The clip is read at the dubber's 25 fps (another rate is
resampled to the nearest frame in time, as ``dub`` does) and cut to ``t`` =
min(its frames, the mel chunks its speech gives, ``max_frames``); those
``t`` frames are the template and the first ``t`` mel chunks of the whole
speech drive it, giving ``t`` output frames. Output frame ``k`` re-renders
template frame ``plan.output_template_frame[k]``: frame ``k`` itself for
``k >= 2``, and frame 2 for ``k = 0, 1`` (the official writer shows the
first window three times). That template frame is output frame ``k``'s
**real** frame in every metric below. A clip needs ``t >= T`` (5, one
window of real frames).

**Metrics** per clip (the mean over its frames), then the mean over clips
(NaN left out; an infinite PSNR stays infinite):

* ``psnr`` / ``ssim`` / ``lpips``: the whole output frame against its real
  frame at the template's resolution (:mod:`dagan_jax.evaluation.metrics`:
  dm-pix PSNR and 11x11 Gaussian SSIM, LPIPS v0.1 AlexNet), over all ``t``
  frames.
* ``psnr_lower`` / ``ssim_lower`` / ``lpips_lower``: the **lower half of the
  face crop**, the region IP_LAP's renderer regenerates: the real frame's
  IP_LAP crop box (the box of its 131 face-mesh points plus 25 px,
  :func:`dagan_jax.face.ip_lap_landmarks.crop_box`), cut from both frames
  and resized (bilinear) to 128 x 128 exactly as the renderer's input
  (:func:`dagan_jax.inference.dub.face_crop`), rows 64-127 (the half the
  renderer masks out and fills in): 64 x 128 RGB images. Over the frames
  whose real face was found.
* ``lmd``: landmark distance of the mouth: the 40 lip points of the face
  mesh (IP_LAP's lip set, :data:`dagan_jax.face.ip_lap_landmarks.LIPS`) on
  the generated frame against the same points on its real frame, per frame
  the mean over points **and** over x and y of the absolute difference
  (the arithmetic of the evaluation code IP_LAP cites, the ViCo challenge's
  ``compute_lmd.py``, which uses FAN-68's 20 lip points instead), in
  **pixels of the template frame** (its native resolution, as the paper
  reports LMD). Frames whose real face was not found are left out, and so
  are generated frames where the mesh finds no face; the latter are counted
  as ``lmd_missed``.
* ``sync_gen_*`` / ``sync_real_*``: the weight-free lip sync of
  :mod:`dagan_jax.audio.sync` (correlation of mouth opening and speech
  energy at the best lag within +-15 frames, the lag, the confidence) on
  the generated and on the real ``t`` frames with the clip's speech; the
  correlation is NaN (confidence 0) for a clip too short to correlate
  (:data:`dagan_jax.audio.sync.MIN_FRAMES` frames at a lag: 30 frames are
  enough, 25 are not).
* ``frames``: ``t``; ``faceless``: output frames whose real frame has no face
  the mesh can find. The dubber still renders them (from landmarks filled in
  from the neighbours, :func:`dagan_jax.inference.dub.fill_gaps`) and they
  count in the whole-frame metrics, but it cannot regenerate a face that is
  not there, so the face metrics leave them out.

* ``lse_c`` / ``lse_d`` / ``lse_offset`` (generated) and ``real_lse_*``
  (real), given SyncNet's weights (``syncnet=``, ``--syncnet
  syncnet_v2.model``): :func:`dagan_jax.evaluation.speech.lse_scores`, faces
  cropped around the face mesh as there.
* ``fid`` (in ``mean`` only: a distance between two sets), given
  pytorch-fid's Inception file (``fid_model=``, ``--fid-inception
  pt_inception-2015-12-05-6726825d.pth``): the whole output frames of every
  clip against their real frames (:mod:`dagan_jax.evaluation.fid`). Compare
  only scores over the same number of frames.

Without those files the scores are listed under ``skipped`` with the
reason.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable

import numpy as np

from dagan_jax.errors import ConfigError, DataError
from dagan_jax.face import ip_lap_landmarks as lm

#: Face-mesh indices of IP_LAP's 40 lip points (outer and inner lip).
LIP_MESH_IDS = tuple(sorted({i for edge in lm.LIPS for i in edge}))
#: Frames scored per metric call (the last call padded: one compiled shape).
METRIC_CHUNK = 16

FID_SKIPPED = {"fid": "needs pytorch-fid's Inception weights: --fid-inception "
                      "pt_inception-2015-12-05-6726825d.pth"}
LSE_SKIPPED = {"lse_c": "needs SyncNet weights: --syncnet syncnet_v2.model "
                        "(the weight-free sync_* figures stand in)",
               "lse_d": "as lse_c"}

#: ``dub_fn(template, chunks) -> (C, H, W, 3) uint8`` output frames.
DubFn = Callable[[Any, np.ndarray], np.ndarray]


@dataclasses.dataclass
class Clip:
  """A clip ready to dub: ``template`` (:class:`~dagan_jax.inference.dub.
  Template` of its first ``t`` frames), ``chunks`` (t, 80, 16) its mel
  chunks, ``samples`` its 16 kHz int16 speech, ``points`` (t, 468, 3) the
  mesh of its frames (NaN where none), ``where`` its path."""
  template: Any
  chunks: np.ndarray
  samples: np.ndarray
  points: np.ndarray
  where: str


def read_frames(path: str, fps: float, limit: int | None = None) -> np.ndarray:
  """(n, H, W, 3) uint8 RGB: the clip at ``fps`` (nearest frame in time,
  :func:`~dagan_jax.inference.dub.resample_indices`), its first ``limit``
  frames only (only those are decoded)."""
  from dagan_jax.inference import dub as D  # pylint: disable=import-outside-toplevel
  from dagan_jax.input import media  # pylint: disable=import-outside-toplevel
  n, src_fps, _ = media.probe_video(path)
  idx = D.resample_indices(n, src_fps, fps)[:limit]
  if idx.size == 0:
    raise DataError(f"{path}: no frames")
  native = dict(media.iter_native_frames(path, sorted(set(idx.tolist()))))
  out = []
  for i in idx:
    f = native[int(i)]
    if not (f.dtype == np.uint8 and f.ndim == 3 and f.shape[2] == 3):
      f = np.rint(media.to_float_rgb(f, path) * 255.0).astype(np.uint8)
    out.append(f)
  return np.stack(out)


def prepare_clip(dubber, path: str, *, max_frames: int | None = None,
                 mesh=None) -> Clip:
  """The cheap part of a clip (sound, frames, faces) with its errors, before
  any network runs. Raises :class:`DataError` naming ``path`` when it has no
  sound, fewer than one window of frames with speech, or no face."""
  from dagan_jax.audio import io as audio_io  # pylint: disable=import-outside-toplevel
  from dagan_jax.audio import sources  # pylint: disable=import-outside-toplevel
  from dagan_jax.inference import dub as D  # pylint: disable=import-outside-toplevel
  src = sources.audio_source(path)
  if src is None:
    raise DataError(f"{path}: no sound (no audio stream and no sidecar .wav); "
                    "the dubbing protocol dubs each clip with its own speech")
  samples = audio_io.read_speech(src)
  chunks = dubber.mel_chunks(samples, where=src)
  frames = read_frames(path, dubber.fps, max_frames)
  t = min(len(chunks), len(frames))
  if t < dubber.T:
    raise DataError(
        f"{path}: {t} frame(s) with speech ({len(frames)} frames read at "
        f"{dubber.fps:g} fps, {len(chunks)} mel chunks of speech); the dubbing "
        f"protocol needs at least one window of {dubber.T}")
  frames, chunks = frames[:t], chunks[:t]
  res = (mesh or dubber.mesh)(frames)
  if not res.found.any():
    raise DataError(f"{path}: no face found in any of its {t} frames (the face "
                    "mesh needs one clear, reasonably large face)")
  pts = np.where(res.found[:, None, None], res.points[..., :2], 0.0)
  template = D.template_from_mesh(frames, D.mesh131_of(pts, frames.shape[1:3]),
                                  res.found, where=path, max_gap=dubber.max_gap)
  return Clip(template, chunks, samples, res.points, path)


def dub_frames(dubber, template, chunks: np.ndarray) -> np.ndarray:
  """(C, H, W, 3) uint8: :meth:`Dubber.dub`'s steps on given mel ``chunks``
  (here the first ``t`` of the whole speech, not the chunks of cut speech,
  whose last columns would see the cut)."""
  plan = dubber.plan(len(chunks), len(template))
  refs = dubber.references(template)
  content = dubber.landmarks(template, chunks, plan, refs)
  faces, _ = dubber.render(template, chunks, plan, content, refs)
  return dubber.composite(template, plan, faces)[plan.output_window]


def lower_face(frames: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
  """(N, size // 2, size, 3) float32 RGB in [0, 1]: each uint8 frame's crop
  ``box`` resized to ``size`` x ``size`` as the renderer sees it, lower half."""
  from dagan_jax.inference import dub as D  # pylint: disable=import-outside-toplevel
  # face_crop gives the renderer's BGR view; flipping back is exact.
  crops = [D.face_crop(f, b, size)[..., ::-1] for f, b in zip(frames, boxes)]
  return np.ascontiguousarray(np.stack(crops)[:, size // 2:])


def _per_frame(fn, real: np.ndarray, fake: np.ndarray) -> np.ndarray:
  """``fn(real, fake)`` per frame, METRIC_CHUNK frames a call, a short call
  padded with its last frame: one compiled shape per frame size, whatever
  the clips' lengths and faceless frames."""
  out = []
  for i in range(0, len(real), METRIC_CHUNK):
    a, b = real[i:i + METRIC_CHUNK], fake[i:i + METRIC_CHUNK]
    n = len(a)
    if n < METRIC_CHUNK:
      pad = METRIC_CHUNK - n
      a = np.concatenate([a, np.repeat(a[-1:], pad, 0)])
      b = np.concatenate([b, np.repeat(b[-1:], pad, 0)])
    out.append(np.asarray(fn(a, b))[:n])
  return np.concatenate(out)


@functools.lru_cache(maxsize=None)
def _jitted(name: str):
  """``metrics.<name>`` compiled whole, once per process and frame shape
  (run op by op, SSIM's filters cost more than the network's frames)."""
  import jax  # pylint: disable=import-outside-toplevel

  from dagan_jax.evaluation import metrics  # pylint: disable=import-outside-toplevel
  return jax.jit(getattr(metrics, name))


def image_scores(real: np.ndarray, fake: np.ndarray, suffix: str = ""
                 ) -> dict[str, float]:
  """Mean PSNR, SSIM (Gaussian) and LPIPS (AlexNet) of float frame stacks in
  [0, 1]; NaN for an empty stack."""
  from dagan_jax.evaluation import metrics  # pylint: disable=import-outside-toplevel
  names = ("psnr", "ssim", "lpips")
  if len(real) == 0:
    return {f"{n}{suffix}": float("nan") for n in names}
  fns = (_jitted("psnr"), _jitted("ssim_gaussian"), metrics.lpips)
  return {f"{n}{suffix}": float(np.mean(_per_frame(fn, real, fake)))
          for n, fn in zip(names, fns)}


def lip_points(points: np.ndarray) -> np.ndarray:
  """(N, 40, 2) the lip points (x, y) of face-mesh points (N, 468, 2+)."""
  return np.asarray(points)[:, list(LIP_MESH_IDS), :2]


def score_clip(clip: Clip, generated: np.ndarray, *, mesh, fps: float = 25.0,
               plan=None, face_size: int = lm.SKETCH_SIZE,
               syncnet=None) -> dict[str, float]:
  """The metrics of one clip (module docstring) from its ``generated`` output
  frames (t, H, W, 3) uint8; ``plan`` the dub's :class:`~dagan_jax.
  inference.dub.DubPlan` (made with T = 5 when None); LSE with ``syncnet``
  (:func:`dagan_jax.evaluation.syncnet.load`)."""
  from dagan_jax.evaluation import metrics  # pylint: disable=import-outside-toplevel
  from dagan_jax.evaluation import speech  # pylint: disable=import-outside-toplevel
  from dagan_jax.inference import dub as D  # pylint: disable=import-outside-toplevel
  tpl = clip.template
  t = len(clip.chunks)
  plan = plan or D.make_plan(t, len(tpl))
  generated = np.asarray(generated)
  if generated.shape != (t,) + tpl.frames.shape[1:] or generated.dtype != np.uint8:
    raise DataError(f"{clip.where}: the dub gave {generated.shape} "
                    f"{generated.dtype} frames; expected {(t,) + tpl.frames.shape[1:]} "
                    "uint8")
  src = plan.output_template_frame
  real = tpl.frames[src]
  face = tpl.found[src]
  out: dict[str, float] = {"frames": float(t), "faceless": float((~face).sum())}
  out.update(image_scores(real / np.float32(255), generated / np.float32(255)))
  if face.any():
    boxes = tpl.boxes[src][face]
    out.update(image_scores(lower_face(real[face], boxes, face_size),
                            lower_face(generated[face], boxes, face_size), "_lower"))
  else:
    out.update(image_scores(real[:0], real[:0], "_lower"))
  # Mouth landmarks: the mesh of the generated frames against the real ones.
  gen = mesh(generated)
  real_pts = clip.points[src]
  both = face & gen.found
  out["lmd_missed"] = float((face & ~gen.found).sum())
  out["lmd"] = (float(np.mean(metrics.keypoint_distance(
      lip_points(real_pts[both]), lip_points(gen.points[both]))))
                if both.any() else float("nan"))
  out.update(speech._sync(gen.points, clip.samples, fps, "sync_gen"))  # pylint: disable=protected-access
  out.update(speech._sync(real_pts, clip.samples, fps, "sync_real"))  # pylint: disable=protected-access
  if syncnet is not None:
    out.update(speech.lse_scores(syncnet, generated, gen.points, clip.samples,
                                 fps, "lse"))
    out.update(speech.lse_scores(syncnet, real, real_pts, clip.samples, fps,
                                 "real_lse"))
  return out


def evaluate_clip(dubber, path: str, *, max_frames: int | None = None, mesh=None,
                  dub_fn: DubFn | None = None,
                  keep: Callable[[Clip, np.ndarray], None] | None = None,
                  syncnet=None) -> dict[str, float]:
  """The metrics of one clip (module docstring). ``dub_fn`` replaces the
  dubber's networks (default :func:`dub_frames`); ``keep(clip, generated)``
  sees what was scored."""
  mesh = mesh or dubber.mesh
  clip = prepare_clip(dubber, path, max_frames=max_frames, mesh=mesh)
  dub_fn = dub_fn or (lambda tpl, chunks: dub_frames(dubber, tpl, chunks))
  generated = dub_fn(clip.template, clip.chunks)
  if keep:
    keep(clip, generated)
  return score_clip(clip, generated, mesh=mesh, fps=dubber.fps,
                    plan=dubber.plan(len(clip.chunks), len(clip.template)),
                    face_size=dubber.img_size, syncnet=syncnet)


def mean_over_clips(per_video: dict[str, dict[str, float]]) -> dict[str, float]:
  """Per metric, the mean over the clips that have a number (NaN left out;
  an infinite PSNR keeps the mean infinite)."""
  keys = sorted({k for v in per_video.values() for k in v})
  out = {}
  for k in keys:
    vals = [v[k] for v in per_video.values() if k in v and not np.isnan(v[k])]
    out[k] = float(np.mean(vals)) if vals else float("nan")
  return out


def evaluate_dubbing(dubber, root: str, *, split: str = "test",
                     num_videos: int | None = None, max_frames: int | None = None,
                     dub_fn: DubFn | None = None,
                     keep: Callable[[Clip, np.ndarray], None] | None = None,
                     progress: Callable[[str], None] | None = None,
                     syncnet=None, fid_model=None) -> dict[str, Any]:
  """The protocol over ``root/split`` (VoxCeleb layout; clips with sound):
  ``{'protocol', 'per_video', 'mean', 'metrics', 'generated_frames',
  'faceless_frames', 'skipped', 'settings'}``. LSE with ``syncnet``
  (:func:`dagan_jax.evaluation.syncnet.load`), FID with ``fid_model``
  (:func:`dagan_jax.evaluation.fid.load`)."""
  from dagan_jax.face import mesh as mesh_lib  # pylint: disable=import-outside-toplevel
  from dagan_jax.input import clips as clips_lib  # pylint: disable=import-outside-toplevel
  if max_frames is not None and max_frames < dubber.T:
    raise ConfigError(f"--max-frames {max_frames} is shorter than one window of "
                      f"{dubber.T} frames, the least the dubbing protocol scores")
  if not mesh_lib.face_available():
    raise DataError('the dubbing protocol needs the face mesh: pip install -e ".[face]"')
  index = clips_lib.scan_split(root, split, "vox")
  names = [c.name for c in index.clips][:num_videos]
  if not names:
    raise DataError(f"no clips in {os.path.join(root, split)}")
  features: dict[str, list[np.ndarray]] = {"real": [], "fake": []}

  def seen(clip: Clip, generated: np.ndarray) -> None:
    if fid_model is not None:   # Inception features of the scored frames
      src = dubber.plan(len(clip.chunks), len(clip.template)).output_template_frame
      features["real"].append(fid_model.features(clip.template.frames[src]))
      features["fake"].append(fid_model.features(generated))
    if keep:
      keep(clip, generated)

  per_video = {}
  for i, name in enumerate(names):
    per_video[name] = evaluate_clip(dubber, index.path(i), max_frames=max_frames,
                                    dub_fn=dub_fn, keep=seen, syncnet=syncnet)
    if progress:
      progress(name)
  mean = mean_over_clips(per_video)
  skipped = {}
  if fid_model is not None:
    from dagan_jax.evaluation import fid as fid_lib  # pylint: disable=import-outside-toplevel
    mean["fid"] = fid_lib.fid_from_features(np.concatenate(features["real"]),
                                            np.concatenate(features["fake"]))
  else:
    skipped.update(FID_SKIPPED)
  if syncnet is None:
    skipped.update(LSE_SKIPPED)
  total = lambda k: int(sum(v[k] for v in per_video.values()))  # noqa: E731
  return {"protocol": "dubbing", "per_video": per_video, "mean": mean,
          "metrics": sorted(mean), "generated_frames": total("frames"),
          "faceless_frames": total("faceless"), "skipped": skipped,
          "settings": {"root": str(root), "split": split, "max_frames": max_frames,
                       "fps": dubber.fps, "T": dubber.T, "face_size": dubber.img_size,
                       "lower_face": f"rows {dubber.img_size // 2}-{dubber.img_size - 1} "
                                     f"of the {dubber.img_size}x{dubber.img_size} "
                                     "IP_LAP face crop",
                       "lmd_units": "pixels of the template frame, mean |dx|, |dy| "
                                    "over the 40 lip points",
                       **({"syncnet": str(syncnet.source),
                           "lse_crops": "face mesh boxes (not S3FD)"}
                          if syncnet is not None else {}),
                       **({"fid_inception": str(fid_model.source),
                           "fid_frames": "whole output frames against their real frames"}
                          if fid_model is not None else {})}}


def format_report(report: dict[str, Any]) -> str:
  """The mean metrics, one a line, then what was skipped and why."""
  lines = [f"protocol dubbing: {len(report['per_video'])} videos, "
           f"{report['generated_frames']} frames, {report['faceless_frames']} "
           "without a face (left out of the face metrics)"]
  lines += [f"  {k:<22}{v:>12.4f}" for k, v in report["mean"].items()]
  if report["skipped"]:
    lines += ["skipped:"] + [f"  {k}: {v}" for k, v in report["skipped"].items()]
  return "\n".join(lines)
