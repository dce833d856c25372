"""Audio2Head's ``audio2kp`` state_dict (official ``AudioModel3D``) -> Flax
variables of :class:`dagan_jax.models.audio2kp.Audio2KP`, strictly.

The entry ``checkpoint['audio2kp']`` of the official ``audio2head.pth.tar``
(no ``module.`` prefix; one is stripped if present). Module paths follow
:func:`~dagan_jax.convert.torch_to_flax.flax_module_to_torch`
(``down_blocks_0`` <-> ``down_blocks.0``) plus this network's own
Sequentials: ``embedding_<i>`` <-> ``embedding.<i>`` and
``res_blocks_<j>_<k>`` <-> ``res_blocks.<j>.<k>`` (a ModuleList of
Sequentials).

Kernels, by the shape of the Flax leaf:

====================  ========================  ==================================
Flax ``kernel``       PyTorch ``weight``        transform
====================  ========================  ==================================
5-D DHWIO (Conv3d)    (out, in, kd, kh, kw)     ``transpose(2, 3, 4, 1, 0)``
4-D HWIO (Conv2d)     (out, in, kh, kw)         ``transpose(2, 3, 1, 0)``
``embedding_0``       (in, out, kh, kw)         ``transpose(2, 3, 0, 1)``, no flip
(ConvTranspose2d)                               (the module flips it when it runs)
====================  ========================  ==================================

Norm scales/biases and running statistics as in
:data:`~dagan_jax.convert.torch_to_flax.LEAF_RULES`; ``num_batches_tracked``
is dropped. The anti-alias Gaussians ``down_id.weight`` (3, 1, k, k) and
``down_pose.weight`` (L, 1, k, k) are buffers: they are checked against the
kernel recomputed for scale 0.25 (and L from the config) and dropped.

Every key must be used or dropped and every Flax leaf found with its shape;
otherwise :class:`~dagan_jax.errors.CheckpointMismatchError` names each
missing, unexpected or mis-shaped key, with hints for a different
``num_kp``, ``seq_len``, ``num_blocks``, ``block_expansion`` or
``estimate_jacobian``. (The generic matcher of ``torch_to_flax`` knows only
4-D kernels, hence this module's own table.)
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import jax
import numpy as np

from dagan_jax.convert.torch_to_flax import (DROP_SUFFIXES, LEAF_RULES,
                                             ExpectedLeaf, LeafRule, Report,
                                             anti_alias_kernel,
                                             flax_module_to_torch, flatten,
                                             oihw_to_hwio, raise_if_failed,
                                             strip_prefix, unflatten)
from dagan_jax.models.audio2kp import IMAGE_SCALE, Audio2KP

#: Flax module names of the official ConvTranspose2d layers.
TRANSPOSED_CONVS = frozenset({"embedding_0"})

_SEQ_RE = re.compile(r"^(?P<parent>embedding|res_blocks)_(?P<idx>\d+(?:_\d+)*)$")


def oidhw_to_dhwio(w: np.ndarray) -> np.ndarray:
  """PyTorch Conv3d weight (out, in, kd, kh, kw) -> (kd, kh, kw, in, out)."""
  return np.ascontiguousarray(np.transpose(w, (2, 3, 4, 1, 0)))


def iohw_to_hwio(w: np.ndarray) -> np.ndarray:
  """PyTorch ConvTranspose2d weight (in, out, kh, kw) -> (kh, kw, in, out)."""
  return np.ascontiguousarray(np.transpose(w, (2, 3, 0, 1)))


_KERNEL_RULES: dict[str, LeafRule] = {
    "conv3d": LeafRule("weight", oidhw_to_dhwio,
                       lambda s: (s[4], s[3], s[0], s[1], s[2])),
    "conv2d": LeafRule("weight", oihw_to_hwio,
                       lambda s: (s[3], s[2], s[0], s[1])),
    "transposed": LeafRule("weight", iohw_to_hwio,
                           lambda s: (s[2], s[3], s[0], s[1])),
}


def torch_module_path(path: tuple[str, ...]) -> str:
  """Flax module path of :class:`Audio2KP` -> dotted PyTorch path."""
  parts = []
  for name in path:
    m = _SEQ_RE.match(name)
    if m:
      parts.append(m.group("parent") + "." + m.group("idx").replace("_", "."))
    else:
      parts.append(flax_module_to_torch([name]))
  return ".".join(parts)


def expected_keys(abstract: Mapping[str, Any]) -> dict[str, ExpectedLeaf]:
  """PyTorch key -> the Flax leaf it fills, for ``abstract`` = ``{'params',
  'batch_stats'}`` of an :class:`Audio2KP` (arrays or shape structs)."""
  out = {}
  for path, leaf in flatten(abstract).items():
    collection, module, name = path[0], path[1:-1], path[-1]
    if collection not in ("params", "batch_stats"):
      continue
    shape = tuple(leaf.shape)
    if (collection, name) == ("params", "kernel"):
      if module and module[-1] in TRANSPOSED_CONVS:
        rule = _KERNEL_RULES["transposed"]
      elif len(shape) == 5:
        rule = _KERNEL_RULES["conv3d"]
      elif len(shape) == 4:
        rule = _KERNEL_RULES["conv2d"]
      else:
        raise ValueError(f"no conversion rule for the {len(shape)}-D kernel "
                         f"{'/'.join(path)}")
    elif (collection, name) in LEAF_RULES:
      rule = LEAF_RULES[(collection, name)]
    else:
      raise ValueError(f"no conversion rule for Flax leaf {'/'.join(path)}")
    key = ".".join(filter(None, [torch_module_path(module), rule.torch_name]))
    out[key] = ExpectedLeaf(path, key, tuple(rule.torch_shape(shape)), rule)
  return out


def abstract_variables(model: Audio2KP) -> dict[str, Any]:
  """The variable shapes of ``model`` (no computation)."""
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                           *model.dummy_inputs()))


def _shape(v: Any) -> tuple[int, ...]:
  return tuple(getattr(v, "shape", ()))


def _diagnose(sd: Mapping[str, Any], model: Audio2KP | None, seq_len: int,
              report: Report) -> None:
  """Hints for checkpoints of another configuration."""
  if report.ok:
    return
  w = sd.get("down_pose.weight")
  if w is not None and _shape(w)[:1] != (seq_len,):
    report.hints.append(
        f"down_pose.weight has {_shape(w)[0]} channels: the checkpoint was "
        f"trained with seq_len {_shape(w)[0]}, the config gives {seq_len}")
  if model is None:
    return
  w = sd.get("kp.weight")
  if w is not None and _shape(w)[0] != model.num_kp:
    report.hints.append(f"kp.weight predicts {_shape(w)[0]} keypoints, the "
                        f"config's num_kp is {model.num_kp}")
  levels = {int(m.group(1)) for k in sd
            for m in [re.match(r"predictor\.encoder\.down_blocks\.(\d+)\.", k)]
            if m}
  if levels and len(levels) != model.num_blocks:
    report.hints.append(f"the checkpoint's hourglass has {len(levels)} levels, "
                        f"the config's num_blocks is {model.num_blocks}")
  else:
    w = sd.get(f"predictor.decoder.up_blocks.{model.num_blocks - 1}.conv.weight")
    if w is not None and _shape(w)[0] != model.block_expansion:
      report.hints.append(
          f"the checkpoint's block_expansion is {_shape(w)[0]} (last decoder "
          f"block), the config's is {model.block_expansion}")
  has_jac = any(k.startswith("jacobian.") for k in sd)
  if has_jac != model.estimate_jacobian:
    report.hints.append(
        f"the checkpoint {'has' if has_jac else 'has no'} Jacobian head but "
        f"estimate_jacobian is {model.estimate_jacobian}")


def convert_audio2kp(state_dict: Mapping[str, Any],
                     model: Audio2KP | Mapping[str, Any], *,
                     seq_len: int | None = None, source: str = "audio2kp"
                     ) -> tuple[dict[str, Any], Report]:
  """Converts the official ``audio2kp`` state_dict.

  Args:
    state_dict: key -> array (numpy or torch converted to numpy).
    model: the :class:`Audio2KP` built from the config, or its abstract
      variables ``{'params', 'batch_stats'}`` (then ``seq_len`` is needed to
      check ``down_pose.weight``).
    seq_len: L; default ``model.seq_len``.
    source: file name for messages.

  Returns:
    ``({'params', 'batch_stats'} as nested numpy float32, report)``.

  Raises:
    CheckpointMismatchError: any missing, unexpected or mis-shaped key, or
      an anti-alias buffer that is not the scale-0.25 Gaussian.
  """
  module = model if isinstance(model, Audio2KP) else None
  if module is not None:
    abstract = abstract_variables(module)
    seq_len = module.seq_len if seq_len is None else seq_len
  else:
    abstract = model
    if seq_len is None:
      raise ValueError("convert_audio2kp: give seq_len with abstract variables")
  sd = strip_prefix(state_dict)
  buffers = {"down_id.weight": anti_alias_kernel(3, IMAGE_SCALE),
             "down_pose.weight": anti_alias_kernel(int(seq_len), IMAGE_SCALE)}
  expected = expected_keys(abstract)
  report = Report("audio2kp", source)
  flat: dict[tuple[str, ...], np.ndarray] = {}
  for key, value in sd.items():
    if key.endswith(DROP_SUFFIXES):
      report.dropped.append(key)
      continue
    if key in buffers:
      _check_buffer(key, np.asarray(value), buffers.pop(key), report)
      continue
    if key not in expected:
      report.unexpected.append((key, _shape(value)))
      continue
    leaf = expected.pop(key)
    arr = np.asarray(value)
    if arr.shape != leaf.torch_shape:
      report.misshaped.append((key, arr.shape, leaf.torch_shape,
                               "/".join(leaf.flax_path)))
      continue
    flat[leaf.flax_path] = np.asarray(leaf.rule.to_flax(arr), np.float32)
  for key, leaf in expected.items():
    report.missing.append((key, leaf.torch_shape, "/".join(leaf.flax_path)))
  for key, want in buffers.items():
    report.missing.append((key, want.shape, "anti-alias buffer, not converted"))
  _diagnose(sd, module, int(seq_len), report)
  raise_if_failed([report])
  return unflatten(flat), report


def _check_buffer(key: str, got: np.ndarray, want: np.ndarray,
                  report: Report) -> None:
  if got.shape != want.shape:
    report.misshaped.append((key, got.shape, want.shape,
                             "anti-alias buffer, not converted"))
  elif not np.allclose(got, want, rtol=0, atol=1e-6):
    report.invalid.append(
        f"{key}: the anti-alias Gaussian in the checkpoint is not the official "
        f"scale-{IMAGE_SCALE} kernel (max abs diff "
        f"{float(np.abs(got - want).max()):.3g})")
  report.dropped.append(key)


__all__ = ["convert_audio2kp", "expected_keys", "abstract_variables",
           "torch_module_path", "oidhw_to_dhwio", "iohw_to_hwio",
           "TRANSPOSED_CONVS"]
