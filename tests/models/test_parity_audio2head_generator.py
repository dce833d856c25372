"""Exact parity with Audio2Head's FOMM renderer (``KPDetector`` and
``OcclusionAwareGenerator``) on the Audio2Head fixture.

Both networks are built from the fixture's ``vox-256`` config
(``model_params``: ``kp_detector_params`` / ``generator_params`` +
``common_params``), the checkpoint's ``kp_detector`` and ``generator``
entries are converted by :func:`dagan_jax.convert.audio2head_fomm.convert_fomm`,
and every array the fixture stores for them is reproduced to
``RTOL * max(1, max|official|)`` (max abs error; float32, CPU):

* the keypoint detector on ``source/image``: ``kp_source/*`` (anti-aliased
  input, hourglass output, heatmap logits, Jacobian maps, keypoints,
  Jacobians);
* the generator at each stored video frame ``generator/frames[i]``, fed the
  official source keypoints ``kp_source/*`` and that frame's driving
  keypoints ``kp_driving/*`` (absolute, as Audio2Head passes them):
  ``generator/<i>/*`` (dense-motion mask, sparse deformed sources,
  occlusion map, deformation, deformed source, prediction, and for i = 0
  the encoder, dense-motion hourglass and bottleneck outputs).

Arrays downstream of the dense-motion warp (``WARP_SENSITIVE``) are held to
RTOL *stage by stage*, as in ``tests/models/test_parity.py``: the dense
motion network's outputs (then the last bottleneck block's) are replaced by
the fixture's values with ``nn.intercept_methods``, so each stage runs on
exactly the official input; the 256x256 warp of ``deformed`` turns float32
rounding of the deformation into sample shifts (1 ulp ~ 1e-5 px). The
free-running networks (nothing forced) are checked too, with
``FREE_RUN_RTOL`` on those arrays. Measured on the small fixture (plain and
inference-rewritten kernels alike): free run ``deformed`` 3.6e-5,
``prediction`` 1.2e-5, ``bottleneck_out`` 8.6e-6, everything else <= 4.2e-6;
staged, ``deformed`` 1.8e-5 (sample positions rounded apart near the right
border), ``prediction`` 3.4e-6, ``bottleneck_out`` 2.3e-6. Set
``DAGAN_PARITY_VERBOSE=1`` (with ``pytest -s``) to print every error.
"""

from __future__ import annotations

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dagan_jax import compute
from dagan_jax.convert.audio2head_fomm import convert_fomm
from dagan_jax.errors import CheckpointMismatchError
from dagan_jax.models.generator import GENERATORS, OcclusionAwareGenerator
from dagan_jax.models.keypoint_detector import KPDetector

#: Max abs error allowed, relative to max(1, max |official array|).
RTOL = 1e-4
#: Bound of the free-running generator on WARP_SENSITIVE arrays.
FREE_RUN_RTOL = 1e-3
#: Generator arrays computed from the deformation by a warp (module docstring).
WARP_SENSITIVE = ("deformed", "bottleneck_out", "prediction")
#: Outputs of the dense motion network (forced together in the staged runs).
DENSE_MOTION_OUTPUTS = ("mask", "sparse_deformed", "deformation", "occlusion_map")
KP_SOURCE_KEYS = ("down_out", "predictor_out", "kp_logits", "jacobian_map",
                  "value", "jacobian")


def _nhwc(leaf: str, a: np.ndarray) -> np.ndarray:
  """A fixture array (torch layout) in our layout."""
  if leaf in ("value", "jacobian", "deformation"):
    return a
  if leaf == "sparse_deformed":  # (B, K+1, C, h, w) -> (B, K+1, h, w, C)
    return a.transpose(0, 1, 3, 4, 2)
  if leaf == "jacobian_map":  # (B, K, 4, h, w) -> (B, h, w, 4K), 4k + e
    b, k, e, h, w = a.shape
    return a.transpose(0, 3, 4, 1, 2).reshape(b, h, w, k * e)
  return a.transpose(0, 2, 3, 1)


def _error(mine, want) -> float:
  """Max abs error over the official array's magnitude, max(1, max |want|)."""
  want = np.asarray(want, np.float64)
  scale = max(1.0, float(np.max(np.abs(want))))
  return float(np.max(np.abs(np.asarray(mine, np.float64) - want))) / scale


def _check(errors: dict[str, float], bound_of) -> None:
  if os.environ.get("DAGAN_PARITY_VERBOSE"):
    for k, e in errors.items():
      print(f"audio2head parity {k}: relative error {e:.2e}")
  bad = {k: e for k, e in errors.items() if not e <= bound_of(k)}
  assert not bad, f"errors above the bound: {bad} (all: {errors})"


def _kp(npz, group: str, rows=slice(None)) -> dict[str, jnp.ndarray]:
  return {k: jnp.asarray(npz[f"{group}/{k}"][rows]) for k in ("value", "jacobian")}


@pytest.fixture(scope="module")
def npz(a2h_npz):
  return {k: a2h_npz[k] for k in a2h_npz.files}


@pytest.fixture(scope="module")
def modules(a2h_config):
  mp = a2h_config["vox-256"]["model_params"]
  kp_detector = KPDetector(**mp["kp_detector_params"], **mp["common_params"])
  generator = OcclusionAwareGenerator(**mp["generator_params"],
                                      **mp["common_params"])
  return kp_detector, generator


@pytest.fixture(scope="module")
def variables(a2h_state_dicts, modules):
  out, reports = convert_fomm(a2h_state_dicts, *modules)
  assert all(r.ok for r in reports)
  return jax.tree.map(jnp.asarray, out)


def _generator_fn(generator, forced_paths: tuple[tuple[str, ...], ...]):
  """Jitted generator apply whose submodules at ``forced_paths`` are not
  run: their ``__call__`` returns the value given for them instead."""
  def run(v, source, kp_driving, kp_source, forced):
    def interceptor(next_fun, args, kwargs, ctx):
      path = tuple(ctx.module.scope.path) if ctx.module.scope else ()
      if ctx.method_name == "__call__" and path in forced_paths:
        return forced[forced_paths.index(path)]
      return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
      out, inter = generator.apply(v, source, kp_driving, kp_source,
                                   mutable=["intermediates"])
    return out, inter["intermediates"]
  return compute.jit(run)


def _generator_arrays(out: dict, inter: dict) -> dict[str, np.ndarray]:
  """{fixture leaf: our array} of one generator run (a forced submodule
  sows nothing)."""
  got = {k: np.asarray(a) for k, a in out.items()}
  for leaf in ("enc_out", "bottleneck_out"):
    got[leaf] = np.asarray(inter[leaf][0])
  if "dense_motion_network" in inter:
    got["dense_motion.hourglass_out"] = np.asarray(
        inter["dense_motion_network"]["hourglass_out"][0])
  return got


@pytest.fixture(scope="module", params=[False, True],
                ids=["plain", "inference_rewrites"])
def ours(request, npz, modules, variables):
  """Our arrays under the fixture's names: ``{'kp_source': {...},
  'free': {i: {...}}, 'staged': {i: {...}}}``, with the kernels a user gets
  (``compute`` 'auto'), plain and with the inference rewrites."""
  kp_detector, generator = modules
  with compute.use(inference=request.param):
    source = jnp.asarray(_nhwc("image", npz["source/image"]))
    kp_out, inter = compute.jit(lambda v, x: kp_detector.apply(
        v, x, mutable=["intermediates"]))(variables["kp_detector"], source)
    got = {"kp_source": {k: np.asarray(a) for k, a in kp_out.items()}}
    for leaf, a in inter["intermediates"].items():
      got["kp_source"][leaf] = np.asarray(a[0])

    kp_source = _kp(npz, "kp_source")
    last = f"bottleneck_r{generator.num_bottleneck_blocks - 1}"
    free = _generator_fn(generator, ())
    warp_forced = _generator_fn(generator, (("dense_motion_network",),))
    both_forced = _generator_fn(generator, (("dense_motion_network",), (last,)))
    got["free"], got["staged"] = {}, {}
    for i, frame in enumerate(np.asarray(npz["generator/frames"])):
      args = (variables["generator"], source,
              _kp(npz, "kp_driving", slice(frame, frame + 1)), kp_source)
      got["free"][i] = _generator_arrays(*free(*args, ()))
      dense = {k: jnp.asarray(_nhwc(k, npz[f"generator/{i}/{k}"]))
               for k in DENSE_MOTION_OUTPUTS if f"generator/{i}/{k}" in npz}
      staged = _generator_arrays(*warp_forced(*args, (dense,)))
      got["staged"][i] = {k: staged[k] for k in ("deformed", "bottleneck_out",
                                                 "prediction")}
      if f"generator/{i}/bottleneck_out" in npz:
        bott = jnp.asarray(_nhwc("x", npz[f"generator/{i}/bottleneck_out"]))
        out, _ = both_forced(*args, (dense, bott))
        got["staged"][i]["prediction"] = np.asarray(out["prediction"])
  return got


def _generator_keys(npz) -> dict[int, list[str]]:
  frames = len(npz["generator/frames"])
  keys = {i: [k.split("/", 2)[2] for k in npz
              if k.startswith(f"generator/{i}/")] for i in range(frames)}
  assert all(keys.values()), "the fixture stores no generator arrays"
  return keys


def test_kp_detector_source(ours, npz):
  errors = {f"kp_source/{k}": _error(ours["kp_source"][k],
                                     _nhwc(k, npz[f"kp_source/{k}"]))
            for k in KP_SOURCE_KEYS}
  _check(errors, lambda k: RTOL)


def test_generator_staged(ours, npz):
  """Every stored generator array to RTOL; the warp-sensitive ones with the
  official input of their stage."""
  errors = {}
  for i, leaves in _generator_keys(npz).items():
    for leaf in leaves:
      run = "staged" if leaf in ours["staged"][i] else "free"
      want = _nhwc(leaf.split(".")[-1], npz[f"generator/{i}/{leaf}"])
      mine = ours[run][i][leaf]
      assert mine.shape == want.shape, (i, leaf, mine.shape, want.shape)
      errors[f"generator/{i}/{leaf} ({run})"] = _error(mine, want)
  _check(errors, lambda k: RTOL)


def test_generator_free_running(ours, npz):
  """Nothing forced: RTOL upstream of the warp, FREE_RUN_RTOL downstream."""
  errors = {}
  for i, leaves in _generator_keys(npz).items():
    for leaf in leaves:
      want = _nhwc(leaf.split(".")[-1], npz[f"generator/{i}/{leaf}"])
      errors[f"generator/{i}/{leaf}"] = _error(ours["free"][i][leaf], want)
  _check(errors, lambda k: FREE_RUN_RTOL if k.split("/")[-1] in WARP_SENSITIVE
         else RTOL)


def test_encode_source_then_decode(ours, npz, modules, variables):
  """The source encoded once, then decoded for all stored frames in one
  batch, gives the full call's outputs (rounded in another order: the
  kernels depend on the batch, so the warp-sensitive bound applies)."""
  _, generator = modules
  v = variables["generator"]
  source = jnp.asarray(_nhwc("image", npz["source/image"]))
  frames = np.asarray(npz["generator/frames"])
  n = len(frames)
  features = jax.jit(lambda v, x: generator.apply(
      v, x, method="encode_source"))(v, source)
  assert _error(features["enc_out"], ours["free"][0]["enc_out"]) <= RTOL
  kp_source = {k: jnp.repeat(a, n, axis=0)
               for k, a in _kp(npz, "kp_source").items()}
  out = jax.jit(lambda v, f, x, kd, ks: generator.apply(
      v, f, x, kd, ks, method="decode"))(
          v, jax.tree.map(lambda a: jnp.repeat(a, n, axis=0), features),
          jnp.repeat(source, n, axis=0), _kp(npz, "kp_driving", frames),
          kp_source)
  want_keys = {"mask", "sparse_deformed", "deformation", "deformed",
               "prediction"} | ({"occlusion_map"}
                                if generator.estimate_occlusion_map else set())
  assert set(out) == want_keys
  errors = {f"{i}/{leaf}": _error(a[i:i + 1], ours["free"][i][leaf])
            for i in range(n) for leaf, a in out.items()}
  _check(errors, lambda k: FREE_RUN_RTOL if k.split("/")[-1] in WARP_SENSITIVE
         else RTOL)


def test_registered():
  assert GENERATORS["OcclusionAwareGenerator"] is OcclusionAwareGenerator


def test_mismatched_key_is_named(a2h_state_dicts, modules):
  sds = {k: dict(v) for k, v in a2h_state_dicts.items()}
  sds["generator"]["final.weights"] = sds["generator"].pop("final.weight")
  kp_w = sds["kp_detector"]["kp.bias"]
  sds["kp_detector"]["kp.bias"] = np.concatenate([kp_w, kp_w[:1]])
  with pytest.raises(CheckpointMismatchError) as err:
    convert_fomm(sds, *modules)
  msg = str(err.value)
  assert "final.weights" in msg and "final.weight:" in msg, msg
  assert "kp.bias" in msg, msg


def test_missing_entry_is_named(a2h_state_dicts, modules):
  sds = {k: v for k, v in a2h_state_dicts.items() if k != "generator"}
  with pytest.raises(CheckpointMismatchError, match="no 'generator' entry"):
    convert_fomm(sds, *modules)
