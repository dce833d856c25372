"""IP_LAP's landmark-generator checkpoint -> Flax variables, strictly.

The official file (``landmarkgenerator_checkpoint.pth``, written by the
training script's ``save_checkpoint``) is ``{'state_dict', 'optimizer',
'global_step', 'global_epoch'}``; the state dict belongs to
``Landmark_generator`` (keys without prefix; a DataParallel ``module.``
prefix is stripped, as ``inference_single.load_model`` does). Values may be
float16 (the parity fixture stores them so): they are upcast to float32,
which is what ``load_state_dict`` into the float32 official module does.

Rules (Flax :class:`~dagan_jax.models.ip_lap_landmark.LandmarkGenerator`
path -> PyTorch key):

* module names ``<list>_<i>`` -> ``<list>.<i>`` for the official
  Sequential / ModuleList attributes ``mel_encoder``, ``ref_encoder``,
  ``pose_encoder``, ``conv_block`` and ``layers``;
* conv ``kernel`` <- ``weight``: ``mel_encoder`` is ``nn.Conv2d`` (OIHW ->
  HWIO); ``ref_encoder`` / ``pose_encoder`` are ``nn.Conv1d`` ``(O, I, k)``
  -> ``(1, k, I, O)`` (our 1-D convs are 2-D convs over a height-1 map);
* Dense ``kernel`` <- Linear ``weight`` transposed;
* ``self_attn/{q,k,v}_proj`` <- rows ``0:d``, ``d:2d``, ``2d:3d`` of the
  fused ``self_attn.in_proj_weight`` (transposed) and ``in_proj_bias``;
* ``modality/embedding`` <- ``modality.weight``; norm ``scale`` <-
  ``weight``; ``bias`` <- ``bias``; BatchNorm ``batch_stats/{mean,var}`` <-
  ``running_{mean,var}``;
* dropped: ``num_batches_tracked``, and the positional tables
  ``fusion_transformer.position_{v,a}.pe`` after a check that they are the
  official sinusoidal table (:func:`~dagan_jax.models.ip_lap_landmark.positional_table`;
  the module recomputes its rows).

Every key the network needs must be present with its shape and every
checkpoint key must be used or dropped; otherwise
:class:`~dagan_jax.errors.CheckpointMismatchError` names each one (with a
hint when the checkpoint's depth or FFN width differs from the network's).

What the state dict does not record: ``nhead`` (``in_proj_weight`` is
``(3d, d)`` for any head count) and ``T`` (the window length). Both are 4
and 5 in the official code and the parity fixture;
:func:`landmark_generator_kwargs_from_state_dict` takes them as arguments.

torch is imported only by :func:`load_landmark_checkpoint` (through
:func:`~dagan_jax.convert.torch_to_flax.load_torch_file`).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Mapping

import numpy as np

from dagan_jax.convert.torch_to_flax import (Report, flatten, load_torch_file,
                                             oihw_to_hwio, raise_if_failed,
                                             strip_prefix, unflatten)
from dagan_jax.errors import CheckpointMismatchError
from dagan_jax.models import ip_lap_landmark as lg

NETWORK = "landmark_generator"
#: Official Sequential / ModuleList attributes whose children are indices.
LIST_CONTAINERS = frozenset({"mel_encoder", "ref_encoder", "pose_encoder",
                             "conv_block", "layers"})
#: Buffers checked against the recomputed sinusoidal table, then dropped.
PE_BUFFERS = ("fusion_transformer.position_v.pe",
              "fusion_transformer.position_a.pe")
#: State-dict keys the kwargs are read from.
LAYER_PREFIX = "fusion_transformer.transformer_encoder.layers."
_LAYER_RE = re.compile(re.escape(LAYER_PREFIX) + r"(\d+)\.")
_LIST_RE = re.compile(r"^(?P<parent>.+)_(?P<index>\d+)$")
_QKV = ("q_proj", "k_proj", "v_proj")

#: Official constructor values that the state dict does not record.
OFFICIAL_NHEAD = 4
OFFICIAL_T = 5


def flax_module_to_torch(path) -> str:
  """Flax module path (names) -> dotted PyTorch module path."""
  out = []
  for name in path:
    m = _LIST_RE.match(name)
    if m and m.group("parent") in LIST_CONTAINERS:
      out += [m.group("parent"), m.group("index")]
    else:
      out.append(name)
  return ".".join(out)


def _to_numpy(value: Any) -> np.ndarray:
  """A torch tensor (any dtype, any device) or array-like -> numpy;
  floating point -> float32. torch is not imported here."""
  if hasattr(value, "detach") and hasattr(value, "numpy"):
    t = value.detach().cpu()
    if t.is_floating_point():
      t = t.float()
    return t.numpy()
  arr = np.asarray(value)
  return arr.astype(np.float32) if np.issubdtype(arr.dtype, np.floating) else arr


@dataclasses.dataclass(frozen=True)
class _Target:
  """One PyTorch key: its expected shape and how it fills Flax leaves."""
  shape: tuple[int, ...]
  flax: str  # for messages
  to_flax: Callable[[np.ndarray], dict[tuple[str, ...], np.ndarray]]


def _is_one_d(module: tuple[str, ...]) -> bool:
  m = _LIST_RE.match(module[0]) if module else None
  return bool(m and m.group("parent") in lg.ENCODERS
              and lg.ENCODERS[m.group("parent")][1])


def expected_keys(abstract: Mapping[str, Any]) -> dict[str, _Target]:
  """The PyTorch keys that the Flax variables ``abstract`` (shapes of
  ``{'params', 'batch_stats'}``) need, with their shapes and conversions."""
  flat = {p: tuple(v.shape) for p, v in flatten(abstract).items()
          if p[0] in ("params", "batch_stats")}
  out: dict[str, _Target] = {}
  fused: dict[tuple[tuple[str, ...], str], dict[str, tuple]] = {}
  for path, shape in flat.items():
    collection, module, leaf = path[0], path[1:-1], path[-1]
    desc = "/".join(path)
    if module and module[-1] in _QKV and collection == "params":
      # Gathered below into the fused in_proj_weight / in_proj_bias.
      fused.setdefault((module[:-1], leaf), {})[module[-1]] = (path, shape)
      continue
    prefix = flax_module_to_torch(module)
    key = lambda name: f"{prefix}.{name}" if prefix else name  # noqa: E731
    ident = lambda p: lambda a: {p: a}  # noqa: E731
    if collection == "batch_stats" and leaf in ("mean", "var"):
      out[key(f"running_{leaf}")] = _Target(shape, desc, ident(path))
    elif collection != "params":
      raise ValueError(f"no conversion rule for Flax leaf {desc}")
    elif leaf == "kernel" and len(shape) == 4:
      kh, kw, cin, cout = shape
      if _is_one_d(module):
        if kh != 1:
          raise ValueError(f"{desc}: a 1-D conv kernel must have height 1")
        out[key("weight")] = _Target(
            (cout, cin, kw), desc,
            (lambda p: lambda a: {p: oihw_to_hwio(a[:, :, None, :])})(path))
      else:
        out[key("weight")] = _Target(
            (cout, cin, kh, kw), desc,
            (lambda p: lambda a: {p: oihw_to_hwio(a)})(path))
    elif leaf == "kernel" and len(shape) == 2:
      out[key("weight")] = _Target(
          shape[::-1], desc,
          (lambda p: lambda a: {p: np.ascontiguousarray(a.T)})(path))
    elif leaf in ("scale", "embedding"):
      out[key("weight")] = _Target(shape, desc, ident(path))
    elif leaf == "bias":
      out[key("bias")] = _Target(shape, desc, ident(path))
    else:
      raise ValueError(f"no conversion rule for Flax leaf {desc}")
  for (module, leaf), parts in fused.items():
    if set(parts) != set(_QKV):
      raise ValueError(f"{'/'.join(module)}: needs all of {_QKV}")
    prefix = flax_module_to_torch(module)
    desc = "/".join(("params",) + module + ("{q,k,v}_proj", leaf))
    paths = [parts[n][0] for n in _QKV]
    if leaf == "kernel":
      d_in, d = parts["q_proj"][1]

      def split_w(a, paths=paths, d=d):
        return {p: np.ascontiguousarray(a[i * d:(i + 1) * d].T)
                for i, p in enumerate(paths)}
      out[f"{prefix}.in_proj_weight"] = _Target(
          (3 * d, d_in), desc, split_w)
    elif leaf == "bias":
      (d,) = parts["q_proj"][1]

      def split_b(a, paths=paths, d=d):
        return {p: a[i * d:(i + 1) * d] for i, p in enumerate(paths)}
      out[f"{prefix}.in_proj_bias"] = _Target(
          (3 * d,), desc, split_b)
    else:
      raise ValueError(f"no conversion rule for {'/'.join(module)}/*/{leaf}")
  return out


def _check_positional_table(key: str, value: np.ndarray, report: Report
                            ) -> None:
  want_shape = (1, lg.MAX_POSITIONS, lg.EMBED_DIM)
  if value.shape != want_shape:
    report.misshaped.append((key, value.shape, want_shape,
                             "positional table buffer, not converted"))
    return
  want = lg.positional_table(lg.MAX_POSITIONS, lg.EMBED_DIM)
  # sin / cos of float32 arguments up to 511 * w: a few float32 ulps of the
  # argument (which grows with the position) separate two libraries'
  # results; anything else (another d_model or max_len, a trained table)
  # is far larger.
  pos = np.arange(lg.MAX_POSITIONS, dtype=np.float64)[:, None]
  bound = 8 * np.finfo(np.float32).eps * (1.0 + pos)
  err = np.abs(value[0].astype(np.float64) - want)
  if not np.all(err <= bound):
    row = int(np.argmax((err / bound).max(axis=1)))
    report.invalid.append(
        f"{key}: not IP_LAP's sinusoidal table (row {row} differs by "
        f"{float(err[row].max()):.3g}; max_len {lg.MAX_POSITIONS}, d_model "
        f"{lg.EMBED_DIM} expected)")


def _abstract_of(target: Any) -> Mapping[str, Any]:
  if isinstance(target, lg.LandmarkGenerator):
    return lg.abstract_variables(target)
  if isinstance(target, Mapping) and "params" in target:
    return target
  raise TypeError("convert_landmark_generator: give a LandmarkGenerator or "
                  "its variables {'params', 'batch_stats'} (shapes)")


def _structure(abstract: Mapping[str, Any]) -> dict[str, int]:
  """nlayers and dim_feedforward of the network whose variables these are."""
  enc = abstract["params"].get("fusion_transformer", {}).get(
      "transformer_encoder", {})
  layers = [k for k in enc if k.startswith("layers_")]
  ffn = {tuple(enc[k]["linear1"]["kernel"].shape)[1] for k in layers}
  return {"nlayers": len(layers),
          "dim_feedforward": ffn.pop() if len(ffn) == 1 else -1}


def convert_landmark_generator(state_dict: Mapping[str, Any], target: Any, *,
                               source: str = "checkpoint"
                               ) -> tuple[dict[str, Any], Report]:
  """Converts an official ``Landmark_generator`` state dict.

  Args:
    state_dict: key -> torch tensor or numpy array (float16 allowed), with
      or without a ``module.`` prefix.
    target: the :class:`~dagan_jax.models.ip_lap_landmark.LandmarkGenerator`
      to load, or its variables' shapes ``{'params', 'batch_stats'}``.
    source: file name for messages.
  Returns:
    ``({'params', 'batch_stats'} as nested float32 numpy dicts, report)``.
  Raises:
    CheckpointMismatchError: naming every missing, unexpected and
      mis-shaped key, and a positional table that is not the official one.
  """
  abstract = _abstract_of(target)
  expected = expected_keys(abstract)
  report = Report(NETWORK, source)
  flat: dict[tuple[str, ...], np.ndarray] = {}
  sd = strip_prefix(state_dict)
  pe_seen = set()
  for key, value in sd.items():
    if key.endswith("num_batches_tracked"):
      report.dropped.append(key)
      continue
    if key in PE_BUFFERS:
      _check_positional_table(key, _to_numpy(value), report)
      pe_seen.add(key)
      report.dropped.append(key)
      continue
    if key not in expected:
      report.unexpected.append((key, tuple(getattr(value, "shape", ()))))
      continue
    target_ = expected.pop(key)
    arr = _to_numpy(value)
    if arr.shape != target_.shape:
      report.misshaped.append((key, arr.shape, target_.shape, target_.flax))
      continue
    for path, leaf in target_.to_flax(arr.astype(np.float32)).items():
      flat[path] = np.asarray(leaf, np.float32)
  for key, target_ in expected.items():
    report.missing.append((key, target_.shape, target_.flax))
  for key in PE_BUFFERS:
    if key not in pe_seen:
      report.missing.append((key, (1, lg.MAX_POSITIONS, lg.EMBED_DIM),
                             "positional table buffer, checked not converted"))
  if not report.ok:
    _diagnose(sd, abstract, report)
  raise_if_failed([report])
  return unflatten(flat), report


def _diagnose(sd: Mapping[str, Any], abstract: Mapping[str, Any],
              report: Report) -> None:
  try:
    found = landmark_generator_kwargs_from_state_dict(sd)
  except CheckpointMismatchError:
    return
  built = _structure(abstract)
  diffs = [f"{name} {found[name]} (network: {built[name]})"
           for name in ("nlayers", "dim_feedforward")
           if found[name] != built[name]]
  if diffs:
    report.hints.append(
        "the checkpoint's transformer has " + ", ".join(diffs) + "; build the "
        "network with LandmarkGenerator(**landmark_generator_kwargs_from_"
        "state_dict(state_dict))")


def landmark_generator_kwargs_from_state_dict(
    state_dict: Mapping[str, Any], *, nhead: int = OFFICIAL_NHEAD,
    T: int = OFFICIAL_T) -> dict[str, int]:  # noqa: N803
  """Constructor arguments of the network a state dict belongs to:
  ``{'T', 'd_model', 'nlayers', 'nhead', 'dim_feedforward'}``.

  ``d_model``, ``nlayers`` and ``dim_feedforward`` are read from the
  shapes; ``nhead`` and ``T`` are not recorded in a state dict and are
  passed through (official values by default).

  Raises:
    CheckpointMismatchError: not a Landmark_generator state dict (names
      the key looked for), or layers of different FFN widths.
  """
  sd = strip_prefix(state_dict)
  layers = sorted({int(m.group(1)) for k in sd for m in [_LAYER_RE.match(k)]
                   if m})
  if not layers:
    raise CheckpointMismatchError(
        f"not an IP_LAP Landmark_generator state dict: no "
        f"'{LAYER_PREFIX}<i>.*' keys (it has {len(sd)} keys, e.g. "
        f"{sorted(sd)[:3]})")
  if layers != list(range(len(layers))):
    raise CheckpointMismatchError(
        f"{NETWORK}: transformer layers {layers} are not numbered 0..n-1")
  ffn, d_model = set(), set()
  for i in layers:
    for name in ("linear1.weight", "self_attn.in_proj_weight"):
      if f"{LAYER_PREFIX}{i}.{name}" not in sd:
        raise CheckpointMismatchError(
            f"{NETWORK}: {LAYER_PREFIX}{i}.{name} is missing")
    ffn.add(int(np.shape(sd[f"{LAYER_PREFIX}{i}.linear1.weight"])[0]))
    d_model.add(int(np.shape(sd[f"{LAYER_PREFIX}{i}.self_attn.in_proj_weight"])[1]))
  if len(ffn) != 1 or len(d_model) != 1:
    raise CheckpointMismatchError(
        f"{NETWORK}: the transformer layers differ in FFN width {sorted(ffn)} "
        f"or d_model {sorted(d_model)}")
  return {"T": int(T), "d_model": d_model.pop(), "nlayers": len(layers),
          "nhead": int(nhead), "dim_feedforward": ffn.pop()}


def load_landmark_checkpoint(path: str, *, trust_pickle: bool = False
                             ) -> dict[str, np.ndarray]:
  """The state dict of an official landmark-generator file (``torch.load``
  of ``{'state_dict', ...}``; a bare state dict is accepted too), as
  float32 numpy arrays with any ``module.`` prefix removed.

  ``torch.load(weights_only=True)`` unless ``trust_pickle``.
  """
  obj = load_torch_file(str(path), trust_pickle=trust_pickle)
  sd = obj.get("state_dict", obj)
  if not isinstance(sd, Mapping):
    raise CheckpointMismatchError(
        f"{path}: 'state_dict' holds a {type(sd).__name__}, not a state dict")
  return strip_prefix(sd)


def load_landmark_generator(path: str, *, nhead: int = OFFICIAL_NHEAD,
                            T: int = OFFICIAL_T,  # noqa: N803
                            trust_pickle: bool = False,
                            **module_kwargs: Any
                            ) -> tuple[lg.LandmarkGenerator, dict[str, Any]]:
  """``(module, variables)`` from an official checkpoint file, the module
  sized from the state dict (``nhead``, ``T``: see
  :func:`landmark_generator_kwargs_from_state_dict`; ``module_kwargs``
  such as ``precision`` go to the constructor)."""
  sd = load_landmark_checkpoint(path, trust_pickle=trust_pickle)
  kwargs = landmark_generator_kwargs_from_state_dict(sd, nhead=nhead, T=T)
  module = lg.LandmarkGenerator(**kwargs, **module_kwargs)
  variables, _ = convert_landmark_generator(sd, module, source=str(path))
  return module, variables
