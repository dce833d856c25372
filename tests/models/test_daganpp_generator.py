"""DaGAN++'s GeometryEnhancedGenerator (TPAMI 2023, Sec. 3.3, Eq. 12-13).

Tiny configs (8-32 channels, 32x32 frames) keep this file to a few compiles:
shapes come from ``jax.eval_shape`` (tracing only); real values are needed
only for the blockwise-vs-naive check and the gradient-flows check, which
share one set of variables. Those variables are drawn with numpy from the
abstract tree (PyTorch's uniform fan-in rule for kernels) rather than by
``module.init`` under jit: compiling the threefry init of ~100 parameters
costs 10-40 s on the 2-core CI machine, the forward alone ~5 s.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from dagan_jax import compute
from dagan_jax.models import build
from dagan_jax.models.geometry_generator import (ATTENTION_LAYERS,
                                                 CrossModalAttention,
                                                 GeometryEnhancedGenerator)
from dagan_jax.ops.attention import naive_attention

B, H, K = 2, 32, 4
DENSE_MOTION = {"block_expansion": 8, "max_features": 32, "num_blocks": 2,
                "scale_factor": 0.5}


def make_generator(attention_layers: str = "all", **kw) -> GeometryEnhancedGenerator:
  kw.setdefault("use_source_depth", attention_layers != "none")
  return GeometryEnhancedGenerator(
      num_channels=3, num_kp=K, block_expansion=8, max_features=32,
      num_down_blocks=3, num_bottleneck_blocks=2, estimate_occlusion_map=True,
      dense_motion_params=DENSE_MOTION, estimate_jacobian=True,
      attention_layers=attention_layers, **kw)


@pytest.fixture(scope="module")
def inputs():
  rng = np.random.default_rng(0)
  img = jnp.asarray(rng.uniform(size=(B, H, H, 3)), jnp.float32)
  depth = jnp.asarray(rng.uniform(size=(B, H, H, 1)), jnp.float32)
  value = rng.uniform(-0.6, 0.6, size=(B, K, 2))
  jac = np.eye(2) + 0.1 * rng.normal(size=(B, K, 2, 2))
  kp_source = {"value": jnp.asarray(value, jnp.float32),
               "jacobian": jnp.asarray(jac, jnp.float32)}
  kp_driving = {"value": jnp.asarray(value + rng.normal(0, 0.1, value.shape),
                                     jnp.float32),
                "jacobian": jnp.asarray(np.eye(2) + 0.1 * rng.normal(size=jac.shape),
                                        jnp.float32)}
  target = jnp.asarray(rng.uniform(size=(B, H, H, 3)), jnp.float32)
  return {"img": img, "depth": depth, "kp_source": kp_source,
          "kp_driving": kp_driving, "target": target}


def numpy_variables(module, *args, seed: int = 0) -> dict:
  """Variables of ``module`` with init-like random values, without compiling
  ``init``: conv kernels ~ U(+-1/sqrt(fan_in)), conv biases ~ U(+-0.1),
  norm scale 1 / bias 0, running mean 0 / var 1."""
  abstract = jax.eval_shape(module.init, jax.random.key(0), *args)
  rng = np.random.default_rng(seed)
  out = {}
  for path, s in traverse_util.flatten_dict(dict(abstract)).items():
    name = path[-1]
    if path[0] == "batch_stats":
      value = np.zeros(s.shape) if name == "mean" else np.ones(s.shape)
    elif name == "kernel":
      bound = 1.0 / np.sqrt(np.prod(s.shape[:-1]))
      value = rng.uniform(-bound, bound, s.shape)
    elif name == "scale":
      value = np.ones(s.shape)
    elif name == "bias" and path[-2].startswith("norm"):
      value = np.zeros(s.shape)
    elif name == "bias":
      value = rng.uniform(-0.1, 0.1, s.shape)
    else:
      raise AssertionError(f"unexpected variable {path}")
    out[path] = jnp.asarray(value, s.dtype)
  return traverse_util.unflatten_dict(out)


def _args(x):
  return (x["img"], x["kp_driving"], x["kp_source"], x["depth"])


@pytest.mark.parametrize("layers", ATTENTION_LAYERS)
def test_shapes_and_submodules(inputs, layers):
  gen = make_generator(layers)
  variables = jax.eval_shape(gen.init, jax.random.key(0), *_args(inputs))
  out, state = jax.eval_shape(
      lambda v: gen.apply(v, *_args(inputs), mutable=["intermediates"]),
      variables)
  assert out["prediction"].shape == (B, H, H, 3)
  assert out["deformed"].shape == (B, H, H, 3)
  h = H // 2  # dense motion at scale_factor 0.5
  assert out["deformation"].shape == (B, h, h, 2)
  assert out["occlusion_map"].shape == (B, h, h, 1)
  assert out["mask"].shape == (B, h, h, K + 1)
  assert out["sparse_deformed"].shape == (B, K + 1, h, h, 3)

  inter = state["intermediates"]
  widths = [8, 16, 32, 32]  # min(max_features, 8 * 2**i)
  for i in range(4):
    size = H // 2 ** i
    assert inter[f"enc_out_{i}"][0].shape == (B, size, size, widths[i])
    assert inter[f"warped_{i}"][0].shape == (B, size, size, widths[i])
    assert inter[f"enhanced_{i}"][0].shape == (B, size, size, widths[i])
    if layers != "none":
      assert inter[f"depth_enc_out_{i}"][0].shape == (B, size, size, widths[i])
  for j, w in enumerate([32, 16, 8]):
    size = H // 2 ** (2 - j)
    assert inter[f"dec_out_{j}"][0].shape == (B, size, size, w)

  params = variables["params"]
  attended = {"all": [0, 1, 2, 3], "bottleneck": [3], "none": []}[layers]
  assert sorted(k for k in params if k.startswith("attention_")) == [
      f"attention_{i}" for i in attended]
  assert ("src_first" in params) == (layers != "none")
  for i in attended:
    a = params[f"attention_{i}"]
    c = widths[i]
    assert a["query_conv"]["kernel"].shape == (1, 1, c, max(1, c // 8))
    assert a["key_conv"]["kernel"].shape == (1, 1, c, max(1, c // 8))
    assert "bias" not in a["key_conv"]  # softmax-invariant, see docstring
    assert a["value_conv"]["kernel"].shape == (1, 1, c, c)
    assert "gamma" not in a
  # Decoder: UpBlock to the scale's width, then a conv on [up, F_en].
  assert params["fuse_blocks_0"]["conv"]["kernel"].shape == (3, 3, 64, 32)
  assert params["final"]["kernel"].shape == (7, 7, 8, 3)


def test_baseline_ignores_depth(inputs):
  gen = make_generator("none")
  args = _args(inputs)
  variables = jax.eval_shape(gen.init, jax.random.key(0), *args[:3])
  out = jax.eval_shape(lambda v: gen.apply(v, *args[:3]), variables)
  assert out["prediction"].shape == (B, H, H, 3)


@pytest.mark.parametrize("layers,use_depth,message", [
    ("all", False, "requires use_source_depth"),
    ("none", True, "nothing reads"),
    ("every", True, "expected one of"),
])
def test_inconsistent_settings_raise(inputs, layers, use_depth, message):
  gen = make_generator(layers, use_source_depth=use_depth)
  with pytest.raises(ValueError, match=message):
    jax.eval_shape(gen.init, jax.random.key(0), *_args(inputs))


def test_registered_in_build():
  assert build.GENERATOR_REGISTRY["GeometryEnhancedGenerator"] is \
      GeometryEnhancedGenerator


def test_attention_module_is_eq13():
  """softmax(W_q F_w (W_k F_d)^T) W_v F_d + F_w, checked against numpy."""
  rng = np.random.default_rng(1)
  app = rng.normal(size=(2, 3, 5, 16)).astype(np.float32)
  dep = rng.normal(size=(2, 3, 5, 16)).astype(np.float32)
  mod = CrossModalAttention(implementation="naive")
  v = mod.init(jax.random.key(0), app, dep)
  out = np.asarray(mod.apply(v, app, dep), np.float64)
  p = jax.tree.map(lambda x: np.asarray(x, np.float64), v["params"])
  q = app.reshape(2, 15, 16) @ p["query_conv"]["kernel"][0, 0] + p["query_conv"]["bias"]
  k = dep.reshape(2, 15, 16) @ p["key_conv"]["kernel"][0, 0]
  val = dep.reshape(2, 15, 16) @ p["value_conv"]["kernel"][0, 0] + p["value_conv"]["bias"]
  s = q @ k.transpose(0, 2, 1)
  s = np.exp(s - s.max(-1, keepdims=True))
  ref = (s / s.sum(-1, keepdims=True)) @ val + app.reshape(2, 15, 16)
  np.testing.assert_allclose(out, ref.reshape(out.shape), atol=1e-5)
  # DaGAN-style options: ReLU projections and a zero-initialised gamma.
  mod = CrossModalAttention(projection_relu=True, learnable_gamma=True)
  v = mod.init(jax.random.key(0), app, dep)
  assert v["params"]["gamma"].shape == (1,)
  np.testing.assert_allclose(mod.apply(v, app, dep), app, atol=0)


@pytest.fixture(scope="module")
def gen_variables(inputs):
  return numpy_variables(make_generator("all"), *_args(inputs))


def test_blockwise_equals_naive(inputs, gen_variables):
  """The memory-linear attention inside the generator gives the naive result
  (and the inference rewrites the plain eval result).

  Block sizes (100, 60) do not divide the 1024 / 256 / 64 / 16 pixels of the
  four scales, so padding and masking are exercised at every scale.
  """
  outs = {}
  for impl in ("naive", "blockwise"):
    gen = make_generator("all", attention_implementation=impl,
                         attention_block_size=[100, 60])  # as from a config
    out, state = jax.jit(lambda v, g=gen: g.apply(
        v, *_args(inputs), mutable=["intermediates"]))(gen_variables)
    outs[impl] = (out, state["intermediates"])
  (out_n, int_n), (out_b, int_b) = outs["naive"], outs["blockwise"]
  # eval with BatchNorm folded into the convs: same result up to rounding
  fast = make_generator("all", attention_implementation="naive")
  out_f = compute.jit(lambda v: fast.apply(v, *_args(inputs)),
                      inference=True)(gen_variables)
  np.testing.assert_allclose(out_f["prediction"], out_n["prediction"], atol=1e-5)
  for i in range(4):
    np.testing.assert_allclose(int_b[f"enhanced_{i}"][0], int_n[f"enhanced_{i}"][0],
                               atol=1e-5, rtol=1e-5)
    # the attention changed the features (it is not a no-op)
    assert float(jnp.abs(int_n[f"enhanced_{i}"][0] - int_n[f"warped_{i}"][0]).max()) > 1e-3
  np.testing.assert_allclose(out_b["prediction"], out_n["prediction"], atol=1e-5)


def test_attention_fn_sees_every_scale(inputs, gen_variables):
  """``attention_fn`` replaces the attention; it is called at the 4 scales
  with (B, h*w, C//8) queries/keys and (B, h*w, C) values."""
  seen = []

  def spy(q, k, v):
    seen.append((q.shape, k.shape, v.shape))
    return naive_attention(q, k, v)

  gen = make_generator("all", attention_fn=spy)
  jax.eval_shape(lambda v: gen.apply(v, *_args(inputs)), gen_variables)
  assert seen == [((B, 1024, 1), (B, 1024, 1), (B, 1024, 8)),
                  ((B, 256, 2), (B, 256, 2), (B, 256, 16)),
                  ((B, 64, 4), (B, 64, 4), (B, 64, 32)),
                  ((B, 16, 4), (B, 16, 4), (B, 16, 32))]


def _pre_batchnorm_bias(path: tuple[str, ...]) -> bool:
  """Conv biases that a BatchNorm in batch-statistics mode cancels exactly:
  the ``conv`` of SameBlock2d / DownBlock2d / UpBlock2d (conv -> BN) and a
  ResBlock2d's ``conv1`` (conv1 -> norm2). A per-channel constant added
  before BN is removed by the batch-mean subtraction, so d loss / d bias = 0
  analytically (PyTorch's gradient is zero for them too); they still matter
  in eval mode, where BN uses running statistics."""
  return path[-1] == "bias" and path[-2] in ("conv", "conv1")


def test_every_parameter_gets_gradient(inputs, gen_variables):
  """L1 reconstruction loss in training mode (batch statistics), as the
  trainer computes it: every parameter gets a gradient above the float32
  noise floor, except the pre-BN conv biases, whose gradient is zero
  analytically (shown exactly: shifting all of them leaves the output
  unchanged) and float noise numerically (that noise is the floor)."""
  gen = make_generator("all")

  def predict(params):
    out, _ = gen.apply({"params": params,
                        "batch_stats": gen_variables["batch_stats"]},
                       *_args(inputs), mutable=["batch_stats"])
    return out["prediction"]

  def loss(params):
    return jnp.mean(jnp.abs(predict(params) - inputs["target"]))

  def shift_cancelled(params):
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict(
        {p: x + 0.5 if _pre_batchnorm_bias(p) else x for p, x in flat.items()})

  @jax.jit
  def run(params):
    return (jax.grad(loss)(params), predict(params),
            predict(shift_cancelled(params)))

  grads, pred, pred_shifted = run(gen_variables["params"])
  # (Float noise only: the staged BatchNorm sums round differently for the
  # shifted activations, ~2e-6 on a sigmoid output.)
  np.testing.assert_allclose(pred_shifted, pred, atol=1e-5)

  flat = {p: float(jnp.max(jnp.abs(g)))
          for p, g in traverse_util.flatten_dict(grads).items()}
  live = {p: m for p, m in flat.items() if not _pre_batchnorm_bias(p)}
  cancelled = {p: m for p, m in flat.items() if _pre_batchnorm_bias(p)}
  # first, src_first; 3 down_blocks, 3 src_down_blocks, 3 up_blocks,
  # 3 fuse_blocks; 2 bottleneck conv1; the dense motion hourglass's 2 + 2.
  assert len(cancelled) == 2 + 4 * 3 + 2 + 4
  assert len(live) == len(flat) - len(cancelled) > 90
  noise = max(cancelled.values())
  assert noise < 1e-7, cancelled
  dead = {"/".join(p): m for p, m in live.items() if not m > 3 * noise}
  assert not dead, f"gradients at the noise floor ({noise:.1e}): {dead}"


def test_encode_source_then_decode_equals_call(inputs):
  """Animation caches the source encodings: ``decode(encode_source(...))``
  gives exactly ``__call__``'s output, in one jitted program each."""
  gen = make_generator("bottleneck")
  args = _args(inputs)
  variables = numpy_variables(gen, *args)
  img, kp_d, kp_s, depth = args[0], args[1], args[2], args[3]

  @jax.jit
  def both(v):
    whole = gen.apply(v, *args)
    feats = gen.apply(v, img, depth, method="encode_source")
    split = gen.apply(v, feats, img, kp_d, kp_s, method="decode")
    return whole, split, feats
  whole, split, feats = both(variables)
  assert len(feats["enc"]) == 4 and len(feats["depth"]) == 4
  for k in whole:
    np.testing.assert_allclose(split[k], whole[k], atol=1e-6, err_msg=k)
  with pytest.raises(ValueError, match="encoder maps"):
    gen.apply(variables, {"enc": feats["enc"][:2], "depth": None}, img, kp_d,
              kp_s, method="decode")
