"""Animate a source face with a driving video (DaGAN's ``demo.py``, in JAX).

Pipeline (all networks in eval mode, NHWC float32 frames in [0, 1]):

1. :meth:`Animator.prepare_source` runs once per source image: source depth
   ``disp0`` ``(1, H, W, 1)`` and source keypoints on RGB-D, kept as a
   :data:`SourceState` pytree.
2. :meth:`Animator.drive` runs the driving frames in fixed-size batches
   through **one** jitted function: driving depth -> driving keypoints ->
   :func:`dagan_jax.ops.normalize_kp` -> generator -> ``prediction``. The last
   batch is padded (the last frame repeated) so every call has the same
   shape; frames are independent (BatchNorm uses running statistics), so the
   padding never changes a result.

Motion transfer (FOMM Sec. 4, Eq. 14-15; the official ``demo.py`` flags):

* **relative** (default; ``--relative``): the generator receives
  ``kp_s + a (kp_d - kp_d0)`` and Jacobians ``J_d J_d0^{-1} J_s``, where
  ``kp_d0`` are the keypoints of the *initial* driving frame and ``a`` is the
  movement scale ``sqrt(area(hull(kp_s))) / sqrt(area(hull(kp_d0)))`` with
  ``adapt_scale`` (``--adapt_scale``), else 1. The initial frame is the first
  driving frame, or the *best* frame (:meth:`Animator.find_best_frame`).
* **absolute**: the generator receives the driving keypoints as detected
  (FOMM's reconstruction protocol); ``adapt_scale`` has no effect.

Best frame: the official demo finds the driving frame whose face-alignment
landmarks, centred on their mean and divided by ``sqrt`` of their convex
hull's area, are closest (sum of squared differences) to the source's, then
animates ``frames[i:]`` forwards and ``frames[:i + 1]`` backwards, both
relative to frame ``i``, and joins them. There is no face-alignment network
here, so the search uses the model's own keypoints, normalised the same way.
Since every frame is animated independently given the initial keypoints,
the forward/backward split gives exactly the frames of one pass over the
video with ``kp_d0`` = the keypoints of frame ``i``; that is what is run.

Seam for caching source features: the per-batch function receives the
source as a :data:`SourceState` pytree and calls :meth:`CompiledModel._decode`.
When the generator module offers ``encode_source(source_image,
source_depth) -> features`` and ``decode(features, source_image,
kp_driving, kp_source, source_depth, driving_depth) -> outputs`` (linen
``method=`` entry points), :meth:`prepare_source` stores the features under
``'features'`` and the per-frame function calls ``decode`` only; otherwise
the generator's ``__call__`` re-encodes the (broadcast) source each batch.
Both DaGAN generators and DaGAN++'s ``GeometryEnhancedGenerator`` (its
encodings at every scale) offer the pair.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import pathlib
from typing import Any, Callable, Mapping

import numpy as np

from dagan_jax.errors import DataError

log = logging.getLogger("dagan_jax.inference")

#: ``{'image': (1,H,W,3), 'depth': (1,H,W,1) or None, 'kp': {'value': (1,K,2),
#: 'jacobian': (1,K,2,2)}, 'features': generator source features (optional)}``
SourceState = dict[str, Any]
KP = dict[str, Any]

DEFAULT_BATCH_SIZE = 8

_noticed: set[tuple[str, str]] = set()


def notice(where: str, what: str) -> None:
  """Logs a conversion once per (thing, kind of conversion) as a warning."""
  key = (str(where), what)
  if key not in _noticed:
    _noticed.add(key)
    log.warning("%s: %s", where, what)


def resize_frames(frames: np.ndarray, frame_hw: tuple[int, int],
                  where: str = "frames") -> np.ndarray:
  """``(T, h, w, 3)`` float frames -> ``(T, H, W, 3)`` at ``frame_hw``.

  Like the training pipeline (``dataset_params.resize_frames``): OpenCV area
  interpolation when shrinking, bicubic when enlarging, clipped to [0, 1].
  The whole frame is resized (as the official demo does), so a non-square
  frame is stretched; a notice says so. No-op when the size already fits.
  """
  frames = np.asarray(frames, np.float32)
  h, w = frames.shape[1:3]
  th, tw = int(frame_hw[0]), int(frame_hw[1])
  if (h, w) == (th, tw):
    return frames
  import cv2  # pylint: disable=import-outside-toplevel
  msg = f"frames are {h}x{w}; resized to the model's {th}x{tw}"
  if h * tw != w * th:
    msg += (" (aspect ratio changed: crop the face to a square first for "
            "undistorted results)")
  notice(where, msg)
  shrink = h * w > th * tw
  interp = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
  out = np.stack([cv2.resize(f, (tw, th), interpolation=interp) for f in frames])
  return np.clip(out, 0.0, 1.0).astype(np.float32)


def normalized_shape(kp: np.ndarray) -> np.ndarray:
  """Keypoints ``(..., K, 2)`` centred on their mean and divided by the square
  root of their convex hull's area (the official ``find_best_frame``'s
  normalisation, applied to the model's keypoints)."""
  from dagan_jax.ops.keypoints import convex_hull_area  # pylint: disable=import-outside-toplevel
  kp = np.asarray(kp, np.float64)
  centred = kp - kp.mean(axis=-2, keepdims=True)
  area = np.asarray(convex_hull_area(np.asarray(kp, np.float32)), np.float64)
  return centred / np.sqrt(np.maximum(area, 1e-12))[..., None, None]


@dataclasses.dataclass
class Animation:
  """What :meth:`Animator.drive` returns (numpy, on the host).

  Attributes:
    prediction: ``(T, H, W, 3)`` float32 generated frames in [0, 1].
    kp_driving: ``(T, K, 2)`` driving keypoints as detected.
    kp_norm: ``(T, K, 2)`` keypoints given to the generator.
    jacobian_driving, jacobian_norm: ``(T, K, 2, 2)`` the matching Jacobians.
    kp_source: ``(K, 2)`` source keypoints.
    scale: ``(T,)`` movement scale used (1 unless relative + adapt_scale).
    driving_depth: ``(T, H, W, 1)`` driving ``disp0`` (when kept), or None.
    best_frame: the initial frame found by the best-frame search, or None.
  """
  prediction: np.ndarray
  kp_driving: np.ndarray
  kp_norm: np.ndarray
  jacobian_driving: np.ndarray
  jacobian_norm: np.ndarray
  kp_source: np.ndarray
  scale: np.ndarray
  driving_depth: np.ndarray | None = None
  best_frame: int | None = None


def _batch_size_for(num_frames: int, batch_size: int) -> int:
  """``batch_size``, or for shorter inputs the smallest power of two that
  holds them (few distinct shapes, little padding)."""
  if num_frames >= batch_size:
    return batch_size
  return min(batch_size, 1 << max(num_frames - 1, 0).bit_length())


class CompiledModel:
  """The jitted functions of one model configuration, shared by every
  :class:`Animator` built from the same config (so a second Animator, e.g.
  the evaluation's after the animation's, compiles nothing new).

  Variables are arguments, never constants baked into the programs.
  ``traces`` counts how often each function was traced: one per batch
  shape (whatever the motion mode), never per frame or per batch.
  """

  def __init__(self, config: Any, *, inference_rewrites: bool,
               use_depth_network: bool):
    from dagan_jax import compute  # pylint: disable=import-outside-toplevel
    from dagan_jax.models.build import build_models  # pylint: disable=import-outside-toplevel

    self.models = build_models(config)
    self.use_depth_network = use_depth_network
    gen = self.models.generator
    self.caches_source_features = (hasattr(gen, "encode_source")
                                   and hasattr(gen, "decode"))
    self.traces: dict[str, int] = {"source": 0, "keypoints": 0, "drive": 0,
                                   "render": 0}
    # The one place where the networks are prepared for inference: the
    # config's kernel set, and the exact eval-mode rewrites of the layer
    # library (compute.use) unless switched off.
    jit = functools.partial(compute.jit, kernels=str(config["compute"]["kernels"]),
                            inference=inference_rewrites)
    self.source_fn = jit(self._source_impl)
    self.keypoints_fn = jit(self._keypoints_impl)
    self.drive_fn = jit(self._drive_impl)
    self.render_fn = jit(self._render_impl)

  def _depth(self, variables, images):
    from dagan_jax.models import build  # pylint: disable=import-outside-toplevel
    if not self.use_depth_network:
      return None
    return build.depth_fn(self.models, variables, images)

  def _source_impl(self, variables, image):
    from dagan_jax.models import build  # pylint: disable=import-outside-toplevel
    self.traces["source"] += 1
    depth = self._depth(variables, image)
    kp = build.keypoints_fn(self.models, variables, image, depth)
    state = {"image": image, "depth": depth,
             "kp": {"value": kp["value"], "jacobian": kp["jacobian"]}}
    if self.caches_source_features:
      state["features"] = self.models.generator.apply(
          variables["generator"], image, depth, method="encode_source")
    return state

  def _keypoints_impl(self, variables, frames):
    from dagan_jax.models import build  # pylint: disable=import-outside-toplevel
    self.traces["keypoints"] += 1
    depth = self._depth(variables, frames)
    kp = build.keypoints_fn(self.models, variables, frames, depth)
    return {"value": kp["value"], "jacobian": kp["jacobian"]}

  def _decode(self, variables, source: SourceState, kp_source: KP,
              kp_driving: KP, driving_depth) -> dict[str, Any]:
    """The generator on a batch of driving keypoints (the seam where cached
    source features are used, see the module docstring)."""
    import jax  # pylint: disable=import-outside-toplevel
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

    b = kp_driving["value"].shape[0]

    def bcast(x):
      return None if x is None else jnp.broadcast_to(x, (b,) + x.shape[1:])

    image, depth = bcast(source["image"]), bcast(source["depth"])
    gen = self.models.generator
    if "features" in source:
      features = jax.tree.map(bcast, source["features"])
      return gen.apply(variables["generator"], features, image, kp_driving,
                       kp_source, depth, driving_depth, method="decode")
    return gen.apply(variables["generator"], image, kp_driving, kp_source,
                     depth, driving_depth)

  def _render_impl(self, variables, source: SourceState, kp_driving: KP,
                   kp_initial: KP, relative):
    """One batch of frames from given driving keypoints (speech-driven
    models predict them): absolute, or with ``relative`` (traced) the
    motion relative to ``kp_initial`` added to the source's keypoints
    (relative Jacobians, no scale adaptation)."""
    import jax  # pylint: disable=import-outside-toplevel
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

    from dagan_jax.ops.keypoints import normalize_kp  # pylint: disable=import-outside-toplevel

    self.traces["render"] += 1
    b = kp_driving["value"].shape[0]

    def bcast(tree):
      return {k: jnp.broadcast_to(v, (b,) + v.shape[1:]) for k, v in tree.items()}

    kp_s, kp_0 = bcast(source["kp"]), bcast(kp_initial)
    kp_rel = normalize_kp(kp_s, kp_driving, kp_0, use_relative_movement=True,
                          use_relative_jacobian=True)
    kp_norm = jax.tree.map(lambda r, a: jnp.where(relative, r, a), kp_rel,
                           dict(kp_driving))
    out = self._decode(variables, source, kp_s, kp_norm, None)
    return {"prediction": out["prediction"], "kp_norm": kp_norm["value"]}

  def _drive_impl(self, variables, source: SourceState, frames, kp_initial,
                  relative, adapt_scale):
    """One batch: depth -> keypoints -> motion transfer -> generator.

    ``relative`` and ``adapt_scale`` are traced booleans: every motion mode
    runs the same compiled program (the keypoint arithmetic of all modes is
    a few hundred flops; :func:`normalize_kp` computes each, ``where``
    picks)."""
    import jax  # pylint: disable=import-outside-toplevel
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

    from dagan_jax.models import build  # pylint: disable=import-outside-toplevel
    from dagan_jax.ops.keypoints import normalize_kp  # pylint: disable=import-outside-toplevel

    self.traces["drive"] += 1
    b = frames.shape[0]
    depth = self._depth(variables, frames)                     # (B, H, W, 1)
    kp_d = build.keypoints_fn(self.models, variables, frames, depth)
    kp_d = {"value": kp_d["value"], "jacobian": kp_d["jacobian"]}

    def bcast(tree):
      return {k: jnp.broadcast_to(v, (b,) + v.shape[1:]) for k, v in tree.items()}

    kp_s, kp_0 = bcast(source["kp"]), bcast(kp_initial)
    kp_rel, scale = normalize_kp(
        kp_s, kp_d, kp_0, adapt_movement_scale=True, use_relative_movement=True,
        use_relative_jacobian=True, return_scale=True)              # scaled
    kp_rel1 = normalize_kp(kp_s, kp_d, kp_0, use_relative_movement=True,
                           use_relative_jacobian=True)              # scale 1
    scale = jnp.where(relative & adapt_scale, scale, jnp.ones_like(scale))
    kp_norm = jax.tree.map(
        lambda scaled, unscaled, absolute: jnp.where(
            relative, jnp.where(adapt_scale, scaled, unscaled), absolute),
        kp_rel, kp_rel1, kp_d)
    out = self._decode(variables, source, kp_s, kp_norm, depth)
    result = {"prediction": out["prediction"], "kp_driving": kp_d["value"],
              "kp_norm": kp_norm["value"], "jacobian_driving": kp_d["jacobian"],
              "jacobian_norm": kp_norm["jacobian"], "scale": scale}
    if depth is not None:
      result["depth"] = depth
    return result


_COMPILED: dict[tuple[str, bool, bool], CompiledModel] = {}


def compiled_model(config: Any, *, inference_rewrites: bool = True,
                   use_depth_network: bool = True) -> CompiledModel:
  """The :class:`CompiledModel` of ``config``, cached by what builds the
  networks (``model_params``, ``dataset_params.frame_shape`` and
  ``compute``)."""
  import json  # pylint: disable=import-outside-toplevel

  def plain(d):
    return d.to_dict() if hasattr(d, "to_dict") else d

  what = {"model_params": plain(config["model_params"]),
          "frame_shape": list(config["dataset_params"]["frame_shape"]),
          "compute": plain(config["compute"])}
  key = (json.dumps(what, sort_keys=True, default=str), bool(inference_rewrites),
         bool(use_depth_network))
  if key not in _COMPILED:
    _COMPILED[key] = CompiledModel(config, inference_rewrites=inference_rewrites,
                                   use_depth_network=use_depth_network)
  return _COMPILED[key]


class Animator:
  """Source image + driving frames -> generated frames, with a model.

  Build from a config and ``{network: variables}`` (as
  :func:`dagan_jax.checkpoints.load_model` returns) or with
  :meth:`from_checkpoint`. Frames given to the methods must already have the
  model's ``frame_shape`` (:meth:`fit` resizes with a notice).

  ``traces`` counts how often each jitted function was traced (shared by
  Animators of the same config, see :class:`CompiledModel`).
  """

  def __init__(self, config: Any, variables: Mapping[str, Any], *,
               batch_size: int = DEFAULT_BATCH_SIZE,
               inference_rewrites: bool = True):
    if batch_size < 1:
      raise DataError(f"batch size must be >= 1, got {batch_size}")
    self.config = config
    self.variables = {k: dict(v) for k, v in variables.items()}
    self.batch_size = int(batch_size)
    self.compiled = compiled_model(
        config, inference_rewrites=inference_rewrites,
        use_depth_network="depth_encoder" in self.variables)
    self.models = self.compiled.models
    self.traces = self.compiled.traces
    self.source: SourceState | None = None

  @classmethod
  def from_checkpoint(cls, path: str | pathlib.Path, config: Any = None,
                      **kwargs) -> "Animator":
    """Loads a model directory, or a training workdir holding ``model/``.

    ``config`` (a ConfigDict or a config file) replaces the stored one; a
    checkpoint that does not fit it raises
    :class:`~dagan_jax.errors.CheckpointMismatchError` naming every
    mismatched variable.
    """
    from dagan_jax import checkpoints  # pylint: disable=import-outside-toplevel

    p = pathlib.Path(path).expanduser()
    if not p.exists():
      raise DataError(f"checkpoint {p} does not exist (expected a model "
                      "directory or a training workdir)")
    config, variables = checkpoints.load_model(checkpoints.resolve_model_dir(p), config)
    return cls(config, variables, **kwargs)

  # ------------------------------------------------------------------ shapes

  @property
  def frame_shape(self) -> tuple[int, int, int]:
    """``(H, W, C)`` the model works at (``dataset_params.frame_shape``)."""
    return tuple(self.models.frame_shape)  # type: ignore[return-value]

  @property
  def num_kp(self) -> int:
    return int(self.models.kp_detector.num_kp)

  def fit(self, frames: np.ndarray, where: str = "frames") -> np.ndarray:
    """``(T, h, w, 3)`` or ``(h, w, 3)`` float frames resized (with a notice)
    to the model's frame size."""
    frames = np.asarray(frames, np.float32)
    single = frames.ndim == 3
    if single:
      frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
      raise DataError(f"{where}: expected RGB frames (T, H, W, 3), got shape "
                      f"{frames.shape}")
    out = resize_frames(frames, self.frame_shape[:2], where)
    return out[0] if single else out

  def _check(self, frames: np.ndarray, what: str) -> np.ndarray:
    frames = np.asarray(frames, np.float32)
    if frames.ndim != 4 or frames.shape[1:] != self.frame_shape:
      raise DataError(f"{what}: expected frames (T, {', '.join(map(str, self.frame_shape))}) "
                      f"(the model's frame_shape; see Animator.fit), got "
                      f"{frames.shape}")
    if frames.shape[0] == 0:
      raise DataError(f"{what}: no frames")
    return frames

  # ----------------------------------------------------------------- public

  def prepare_source(self, image: np.ndarray) -> SourceState:
    """Source depth and keypoints of ``image`` ``(H, W, 3)`` (computed once,
    jitted); also kept as ``self.source`` for :meth:`drive`."""
    image = self._check(np.asarray(image, np.float32)[None], "source image")
    self.source = self.compiled.source_fn(self.variables, image)
    return self.source

  def _batches(self, frames: np.ndarray, batch_size: int | None, *,
               shrink: bool = True):
    """``(valid frames, batch)`` pairs; the last batch padded with its last
    frame. ``shrink``: inputs shorter than a batch get a smaller
    power-of-two batch (else a full padded one, sharing its program)."""
    bs = batch_size or self.batch_size
    if shrink:
      bs = _batch_size_for(len(frames), bs)
    for start in range(0, len(frames), bs):
      chunk = frames[start:start + bs]
      n = len(chunk)
      if n < bs:
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], bs - n, 0)])
      yield n, chunk

  def keypoints(self, frames: np.ndarray, *, batch_size: int | None = None
                ) -> KP:
    """Keypoints of ``frames`` ``(T, H, W, 3)``: ``{'value': (T, K, 2),
    'jacobian': (T, K, 2, 2)}`` numpy arrays (batched, jitted)."""
    import jax  # pylint: disable=import-outside-toplevel
    frames = self._check(frames, "frames")
    values, jacs = [], []
    for n, chunk in self._batches(frames, batch_size, shrink=False):
      kp = jax.device_get(self.compiled.keypoints_fn(self.variables, chunk))
      values.append(kp["value"][:n])
      jacs.append(kp["jacobian"][:n])
    return {"value": np.concatenate(values), "jacobian": np.concatenate(jacs)}

  def find_best_frame(self, frames: np.ndarray, source: SourceState | None = None,
                      *, batch_size: int | None = None,
                      kp_driving: np.ndarray | None = None) -> int:
    """Index of the driving frame whose normalised keypoints are closest to
    the source's (see the module docstring); the first one on ties."""
    source = self._source_or_last(source)
    if kp_driving is None:
      kp_driving = self.keypoints(frames, batch_size=batch_size)["value"]
    src = normalized_shape(np.asarray(source["kp"]["value"])[0])     # (K, 2)
    drv = normalized_shape(kp_driving)                              # (T, K, 2)
    dist = ((src[None] - drv) ** 2).sum(axis=(1, 2))
    return int(np.argmin(dist))

  def _source_or_last(self, source: SourceState | None) -> SourceState:
    source = source if source is not None else self.source
    if source is None:
      raise ValueError("call prepare_source(image) first or pass source=")
    return source

  def drive(self, frames: np.ndarray, *, source: SourceState | None = None,
            relative: bool = True, adapt_scale: bool = True,
            kp_driving_initial: KP | None = None,
            batch_size: int | None = None, keep_depth: bool = False,
            progress: Callable[[int], None] | None = None) -> Animation:
    """Animates ``source`` (default: the last :meth:`prepare_source`) with
    ``frames`` ``(T, H, W, 3)``.

    Args:
      relative: relative motion with relative Jacobians (else absolute).
      adapt_scale: scale relative motion by the keypoint hulls' size ratio.
      kp_driving_initial: ``{'value': (K, 2) or (1, K, 2), 'jacobian': ...}``
        the motion is relative to; default the keypoints of ``frames[0]``.
      batch_size: frames per jitted call (default ``self.batch_size``).
      keep_depth: also return the driving depth maps.
      progress: called with the number of frames finished after each batch.
    """
    import jax  # pylint: disable=import-outside-toplevel
    source = self._source_or_last(source)
    frames = self._check(frames, "driving frames")
    if kp_driving_initial is None:
      kp_driving_initial = self.keypoints(frames[:1]) if relative else None
    if kp_driving_initial is None:  # absolute motion: unused, any value
      kp_driving_initial = {k: np.asarray(v) for k, v in source["kp"].items()}
    kp_0 = {k: np.asarray(kp_driving_initial[k], np.float32).reshape(
        (1,) + tuple(np.shape(source["kp"][k])[1:])) for k in ("value", "jacobian")}
    parts: dict[str, list[np.ndarray]] = {}
    for n, chunk in self._batches(frames, batch_size):
      out = self.compiled.drive_fn(self.variables, source, chunk, kp_0,
                                   np.bool_(relative), np.bool_(adapt_scale))
      out = jax.device_get(out)
      for k, v in out.items():
        if k == "depth" and not keep_depth:
          continue
        parts.setdefault(k, []).append(np.asarray(v)[:n])
      if progress is not None:
        progress(n)
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    return Animation(prediction=cat["prediction"].astype(np.float32),
                     kp_driving=cat["kp_driving"], kp_norm=cat["kp_norm"],
                     jacobian_driving=cat["jacobian_driving"],
                     jacobian_norm=cat["jacobian_norm"],
                     kp_source=np.asarray(source["kp"]["value"])[0],
                     scale=cat["scale"], driving_depth=cat.get("depth"))

  def animate(self, source_image: np.ndarray, driving: np.ndarray, *,
              relative: bool = True, adapt_scale: bool = True,
              find_best_frame: bool = False, best_frame: int | None = None,
              batch_size: int | None = None, keep_depth: bool = False,
              progress: Callable[[int], None] | None = None) -> Animation:
    """The official demo in one call: source ``(H, W, 3)``, driving
    ``(T, H, W, 3)`` at the model's frame size.

    ``find_best_frame`` / ``best_frame``: relative motion starts from that
    driving frame instead of the first (module docstring).
    """
    frames = self._check(driving, "driving frames")
    source = self.prepare_source(source_image)
    kp_0 = None
    found = None
    if best_frame is not None:
      if not 0 <= best_frame < len(frames):
        raise DataError(f"best frame {best_frame} is outside the driving video "
                        f"(frames 0..{len(frames) - 1})")
      found = int(best_frame)
    elif find_best_frame:
      kp_all = self.keypoints(frames, batch_size=batch_size)
      found = self.find_best_frame(frames, source, kp_driving=kp_all["value"])
      kp_0 = {k: v[found:found + 1] for k, v in kp_all.items()}
    if found is not None and kp_0 is None:
      kp_0 = self.keypoints(frames[found:found + 1])
    result = self.drive(frames, source=source, relative=relative,
                        adapt_scale=adapt_scale, kp_driving_initial=kp_0,
                        batch_size=batch_size, keep_depth=keep_depth,
                        progress=progress)
    result.best_frame = found
    return result


# --------------------------------------------------------------------------
# Reading inputs and writing outputs


def read_source(path: str | pathlib.Path, frame: int = 0) -> np.ndarray:
  """The source image ``(H, W, 3)`` float32: an image file, or frame
  ``frame`` of a clip (video, frame folder, ``.npy``). Greyscale and RGBA
  are converted by :mod:`dagan_jax.input.media` with a notice."""
  from dagan_jax.input import media  # pylint: disable=import-outside-toplevel
  p = str(path)
  kind = media.clip_kind(p)
  if kind == "strip":
    img = media.read_image(p)
    if frame:
      raise DataError(f"{p} is an image; --source-frame applies to videos")
    return img
  return media.read_frames(p, [frame])[0]


def read_driving(path: str | pathlib.Path, frame_hw: tuple[int, int] | None = None
                 ) -> tuple[np.ndarray, float | None]:
  """A driving clip as ``((T, H, W, 3) float32, fps or None)``, streamed
  frame by frame and resized to ``frame_hw`` (with a notice) on the way, so
  only the model-sized frames are held in memory."""
  from dagan_jax.input import media  # pylint: disable=import-outside-toplevel
  p = str(path)
  kind = media.clip_kind(p)
  if kind == "strip":  # one image: a still driving "video" of one frame
    frames = media.read_image(p)[None]
    fps = None
  else:
    num, fps, _ = media.probe_video(p)
    frames_l = []
    for _, f in media.iter_native_frames(p, None, kind=kind,
                                         num_frames=None if kind == "video" else num):
      f = media.to_float_rgb(f, p)
      if frame_hw is not None:
        f = resize_frames(f[None], frame_hw, p)[0]
      frames_l.append(f)
    if not frames_l:
      raise DataError(f"{p}: driving video has no frames")
    frames = np.stack(frames_l)
  if frame_hw is not None:
    frames = resize_frames(frames, frame_hw, p)
  return frames, fps


def side_by_side(source: np.ndarray, driving: np.ndarray, result: Animation,
                 *, min_size: int = 128) -> np.ndarray:
  """``(T, h, 4 w, 3)`` frames: source | driving with its keypoints | driving
  depth (colourised ``disp0``) | result; panels enlarged (nearest) to at
  least ``min_size`` pixels so the keypoints stay visible."""
  from dagan_jax import visualize  # pylint: disable=import-outside-toplevel
  h, w = source.shape[:2]
  f = max(1, math.ceil(min_size / max(h, w)))

  def up(img):
    img = np.asarray(img, np.float32)
    return np.repeat(np.repeat(img, f, axis=0), f, axis=1) if f > 1 else img

  src = up(source)
  frames = []
  for t in range(len(driving)):
    panels = [src, visualize.draw_keypoints(up(driving[t]), result.kp_driving[t])]
    if result.driving_depth is not None:
      panels.append(up(visualize.colorize(result.driving_depth[t])))
    panels.append(up(result.prediction[t]))
    frames.append(np.concatenate(panels, axis=1))
  return np.stack(frames)


def side_by_side_path(out: str | pathlib.Path) -> pathlib.Path:
  """``a/b.mp4`` -> ``a/b_side_by_side.mp4`` (folders: ``a/b_side_by_side``)."""
  p = pathlib.Path(out)
  return p.with_name(f"{p.stem}_side_by_side{p.suffix}")


def write_frames(out: str | pathlib.Path, frames: np.ndarray, fps: float
                 ) -> pathlib.Path:
  """Writes ``frames`` by the extension of ``out`` (see
  :func:`dagan_jax.input.media.write_video`): ``.mp4`` (H.264 at ``fps``),
  ``.npy`` (float32, exact), or no extension: a folder of 8-bit PNG frames
  ``0000000.png ...`` (lossless for the 8-bit frames). Numbered PNGs in the
  folder left over from a longer earlier run are removed."""
  import re  # pylint: disable=import-outside-toplevel

  from dagan_jax.input import media  # pylint: disable=import-outside-toplevel
  p = pathlib.Path(out)
  if p.suffix == "" and p.exists() and not p.is_dir():
    raise DataError(f"{p} exists and is a file; a PNG output needs a folder")
  written = media.write_video(p, frames, fps=fps)
  if p.suffix == "":
    for f in p.iterdir():
      m = re.fullmatch(r"(\d{7})\.png", f.name)
      if m and int(m.group(1)) >= len(frames):
        f.unlink()
  return written
