"""FOMM's training augmentation, driven by Grain's per-record rng.

``dataset_params.augmentation_params`` has FOMM's sections:

``flip_param: {horizontal_flip: bool, time_flip: bool}``
    FOMM's ``RandomFlip``: with probability 1/2 the clip is reversed in time
    and nothing else happens; otherwise, with probability 1/2, every frame is
    mirrored left-right. So P(time flip) = 1/2 and P(horizontal flip) = 1/4,
    never both; we keep these probabilities (the official training
    distribution). A disabled flip keeps its coin but never acts.
``jitter_param: {brightness, contrast, saturation, hue}``
    FOMM's ``ColorJitter`` (FOMM's defaults: 0.1 each): factors
    ``b, c, s ~ U[max(0, 1 - x), 1 + x]`` and ``h ~ U[-x, x]`` (a value of 0
    disables a term), applied in a random order on 8-bit images as
    torchvision's PIL functions do: brightness = blend with black, contrast =
    blend with the mean grey level (PIL ``ImageEnhance.Contrast``),
    saturation = blend with the greyscale image (``ImageEnhance.Color``), hue
    = shift of the 8-bit HSV hue channel by ``trunc(h * 255)`` mod 256. The
    HSV round trip uses OpenCV (``COLOR_RGB2HSV_FULL``), 7x faster than PIL's
    HSV mode that torchvision uses; the two 8-bit conversions differ by
    rounding (0.25 grey levels on average on a face, at most 6).

One draw of parameters serves every frame of a record, so source and driving
(or the depth triplet) are flipped and coloured alike. All randomness comes
from the ``numpy.random.Generator`` passed in (Grain's per-record rng), so a
record is the same whatever the worker count. FOMM's ``rotation_param``,
``resize_param`` and ``crop_param`` are not implemented (the VoxCeleb and
HDTF configs do not use them); giving them is a :class:`ConfigError`.

Frames go in and come out as lists of ``(H, W, 3)`` uint8 arrays.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image, ImageEnhance

from dagan_jax.errors import ConfigError

_FLIP_KEYS = ("horizontal_flip", "time_flip")
_JITTER_KEYS = ("brightness", "contrast", "saturation", "hue")


def _as_dict(x: Any) -> dict:
  if x is None:
    return {}
  if hasattr(x, "to_dict"):
    return x.to_dict()
  return dict(x)


class Augmenter:
  """FOMM's flip + colour jitter (see the module docstring).

  ``Augmenter(augmentation_params)``; ``aug(frames, rng) -> frames``.
  Picklable (Grain workers receive it).
  """

  def __init__(self, augmentation_params: Mapping[str, Any] | None):
    params = _as_dict(augmentation_params)
    unknown = sorted(set(params) - {"flip_param", "jitter_param"})
    if unknown:
      raise ConfigError(
          f"dataset_params.augmentation_params.{unknown[0]} is not supported "
          f"(supported: flip_param, jitter_param)")
    flip = _as_dict(params.get("flip_param"))
    jitter = _as_dict(params.get("jitter_param"))
    for section, keys, given in (("flip_param", _FLIP_KEYS, flip),
                                 ("jitter_param", _JITTER_KEYS, jitter)):
      bad = sorted(set(given) - set(keys))
      if bad:
        raise ConfigError(
            f"dataset_params.augmentation_params.{section}.{bad[0]} is not a "
            f"known key (expected {', '.join(keys)})")
    self.time_flip = bool(flip.get("time_flip", False))
    self.horizontal_flip = bool(flip.get("horizontal_flip", False))
    self.jitter = {k: float(jitter.get(k, 0.0)) for k in _JITTER_KEYS}
    for k, v in self.jitter.items():
      if v < 0 or (k == "hue" and v > 0.5):
        raise ConfigError(
            f"dataset_params.augmentation_params.jitter_param.{k} is {v}; "
            f"expected {'0 <= hue <= 0.5' if k == 'hue' else 'a value >= 0'}")
    self.has_jitter = any(v > 0 for v in self.jitter.values())

  def __repr__(self) -> str:
    return (f"Augmenter(time_flip={self.time_flip}, "
            f"horizontal_flip={self.horizontal_flip}, jitter={self.jitter})")

  def draw(self, rng: np.random.Generator) -> dict[str, Any]:
    """One draw of augmentation parameters (also used by :meth:`__call__`)."""
    time_flip = bool(rng.random() < 0.5) and self.time_flip
    hflip = False
    if not time_flip:
      hflip = bool(rng.random() < 0.5) and self.horizontal_flip
    return {"time_flip": time_flip, "horizontal_flip": hflip,
            "jitter": self.draw_jitter(rng)}

  def draw_jitter(self, rng: np.random.Generator) -> list[tuple[str, float]]:
    """Jitter operations ``[(name, factor), ...]`` in the order applied."""
    ops = []
    for k in _JITTER_KEYS:
      x = self.jitter[k]
      if x > 0:
        lo, hi = (-x, x) if k == "hue" else (max(0.0, 1.0 - x), 1.0 + x)
        ops.append((k, float(rng.uniform(lo, hi))))
    order = rng.permutation(len(ops)) if ops else []
    return [ops[i] for i in order]

  def __call__(self, frames: Sequence[np.ndarray], rng: np.random.Generator
               ) -> list[np.ndarray]:
    return self.apply(frames, self.draw(rng))

  @staticmethod
  def apply(frames: Sequence[np.ndarray], p: Mapping[str, Any]) -> list[np.ndarray]:
    """Applies drawn parameters ``p`` to every frame alike."""
    out = list(frames)
    if p["time_flip"]:
      out = out[::-1]
    if p["horizontal_flip"]:
      out = [np.ascontiguousarray(f[:, ::-1]) for f in out]
    if p["jitter"]:
      out = [jitter_frame(f, p["jitter"]) for f in out]
    return out


def jitter_frame(frame: np.ndarray, ops: Sequence[tuple[str, float]]) -> np.ndarray:
  """Colour jitter of one ``(H, W, 3)`` uint8 frame (ops from ``draw_jitter``)."""
  img = Image.fromarray(frame, "RGB")
  for name, factor in ops:
    if name == "brightness":
      img = ImageEnhance.Brightness(img).enhance(factor)
    elif name == "contrast":
      img = ImageEnhance.Contrast(img).enhance(factor)
    elif name == "saturation":
      img = ImageEnhance.Color(img).enhance(factor)
    elif name == "hue":
      img = shift_hue(img, factor)
    else:
      raise ValueError(f"unknown jitter op {name!r}")
  return np.asarray(img)


def shift_hue(img: Image.Image, factor: float) -> Image.Image:
  """Rotates the 8-bit HSV hue (full 0-255 range) by ``trunc(factor * 255)``
  mod 256, with OpenCV's conversions."""
  import cv2  # pylint: disable=import-outside-toplevel
  hsv = cv2.cvtColor(np.asarray(img), cv2.COLOR_RGB2HSV_FULL)
  shift = int(np.trunc(factor * 255.0)) % 256
  hsv[..., 0] = (hsv[..., 0].astype(np.int32) + shift).astype(np.uint8)
  return Image.fromarray(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL), "RGB")
