"""The inference rewrites (compute.use(inference=True)) and the CPU kernel
set's Winograd route: exact in real arithmetic, training untouched."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dagan_jax import compute
from dagan_jax.backends.xla_cpu import conv as cpu_conv
from dagan_jax.backends.xla_cpu import winograd
from dagan_jax.models import layers


def _perturbed(v):
  v = jax.tree.map(lambda a: a, v)
  v["batch_stats"] = jax.tree.map(lambda a: a + 0.3, v["batch_stats"])
  for n in ("norm1", "norm2"):
    v["params"][n]["scale"] = v["params"][n]["scale"] * 1.7
    v["params"][n]["bias"] = v["params"][n]["bias"] + 0.2
  return v


@pytest.mark.parametrize("channels,size", [(128, 16), (16, 8)])
def test_resblock_inference_rewrites_equal_plain(channels, size):
  """With the CPU kernels at 128 channels on 16x16 both convs run as
  Winograd F(2x2, 3x3) and norm2 is folded into conv1; at 16 channels only
  the folding applies. The reference is the plain program."""
  x = jax.random.normal(jax.random.key(0), (2, size, size, channels))
  block = layers.ResBlock2d(3, 1)
  plain = fast = block
  v = _perturbed(block.init(jax.random.key(1), x))
  want = compute.jit(block.apply, kernels="xla")(v, x)
  got = compute.jit(block.apply, kernels="cpu", inference=True)(v, x)
  scale = float(jnp.abs(want).max())
  np.testing.assert_allclose(got, want, atol=2e-6 * max(scale, 1.0))
  # Training mode: the rewrites change nothing (bit-identical outputs and
  # statistics with the same kernels).
  yp, sp = plain.apply(v, x, mutable=["batch_stats"])
  with compute.use(inference=True):
    yf, sf = fast.apply(v, x, mutable=["batch_stats"])
  np.testing.assert_array_equal(yp, yf)
  for n in ("norm1", "norm2"):
    np.testing.assert_array_equal(sp["batch_stats"][n]["var"],
                                  sf["batch_stats"][n]["var"])


def test_conv2d_routes_wide_3x3_convs_to_winograd(monkeypatch):
  """The CPU kernel set's policy: Winograd for 3x3 / padding-1 / stride-1
  float32 convs from WINOGRAD_MIN_CHANNELS channels in and out and
  WINOGRAD_MIN_PIXELS pixels, in training and in eval mode alike (a
  ResBlock's two convs); the plain kernel set never."""
  calls = []
  real = winograd.conv3x3_f23

  def spy(*a, **k):
    calls.append(a[0].shape)
    return real(*a, **k)

  monkeypatch.setattr(winograd, "conv3x3_f23", spy)
  block = layers.ResBlock2d(3, 1)
  with compute.use("cpu"):
    for c, s, expect in ((64, 8, 2), (32, 16, 0), (128, 4, 0)):
      x = jnp.ones((1, s, s, c))
      v = block.init(jax.random.key(0), x)
      for mutable in ([], ["batch_stats"]):
        calls.clear()
        block.apply(v, x, mutable=mutable)
        assert len(calls) == expect, (c, s, mutable, calls)
    x, k = jnp.ones((1, 8, 8, 64)), jnp.ones((3, 3, 64, 64))
    for kwargs, expect in ((dict(padding=1), 1), (dict(padding=1, stride=2), 0),
                           (dict(padding=0), 0), (dict(padding=1, dilation=2), 0)):
      calls.clear()
      layers.conv2d(x, k, **kwargs)
      assert len(calls) == expect, kwargs
    calls.clear()
    layers.conv2d(x.astype(jnp.bfloat16), k, padding=1)
    assert not calls
  with compute.use("xla"):
    layers.conv2d(x, k, padding=1)
    block.apply(block.init(jax.random.key(0), x), x)
  assert not calls


def test_auto_kernels_follow_the_backend():
  """'auto' is the CPU kernel set on the CPU backend only; accelerators run
  the plain program; the default outside any context is 'auto'."""
  assert compute.resolve("auto", "cpu") == "cpu"
  assert compute.resolve("auto", "gpu") == "xla"
  assert compute.resolve("auto", "tpu") == "xla"
  assert compute.resolve("xla", "cpu") == "xla"
  assert compute.resolve("cpu", "gpu") == "cpu"
  assert compute.current() == compute.Settings("auto", False)
  with pytest.raises(ValueError, match="compute.kernels"):
    compute.resolve("fast")
  with pytest.raises(ValueError, match="compute.kernels"):
    with compute.use("winograd"):
      pass
  # Compile options go with the kernel set: Eigen for the CPU kernels on
  # the CPU, XLA's defaults for the plain program and on accelerators.
  assert compute.compiler_options("cpu", "cpu") == {
      "xla_cpu_experimental_ynn_fusion_type": ""}
  assert compute.compiler_options("xla", "cpu") is None
  assert compute.compiler_options("auto", "gpu") is None


def test_depthaware_generator_rewrites_match_plain_with_every_fast_path(
    monkeypatch):
  """The generator at narrow widths with every fast path forced (phase
  convs, Winograd, folding) equals the plain program up to rounding."""
  from dagan_jax.models.generator import DepthAwareGenerator
  monkeypatch.setattr(cpu_conv, "WINOGRAD_MIN_CHANNELS", 1)
  monkeypatch.setattr(cpu_conv, "WINOGRAD_MIN_PIXELS", 1)
  monkeypatch.setattr(layers, "PHASE_MIN_PIXELS", 1)
  kw = dict(num_channels=3, num_kp=5, block_expansion=8, max_features=32,
            num_down_blocks=2, num_bottleneck_blocks=2,
            estimate_occlusion_map=True,
            dense_motion_params=dict(block_expansion=8, max_features=32,
                                     num_blocks=3, scale_factor=0.5))
  plain = fast = DepthAwareGenerator(**kw)
  rng = np.random.default_rng(0)
  src = jnp.asarray(rng.random((1, 32, 32, 3), np.float32))
  depth = jnp.asarray(rng.random((1, 32, 32, 1), np.float32))
  kp = {"value": jnp.asarray(rng.uniform(-0.8, 0.8, (1, 5, 2)).astype(np.float32)),
        "jacobian": jnp.broadcast_to(jnp.eye(2), (1, 5, 2, 2))}
  kp2 = {"value": kp["value"] * 0.9, "jacobian": kp["jacobian"]}
  v = plain.init(jax.random.key(0), src, kp, kp2, depth)
  v["batch_stats"] = jax.tree.map(lambda a: a * 1.2 + 0.1, v["batch_stats"])
  want = compute.jit(lambda v: plain.apply(v, src, kp2, kp, depth,
                                           mutable=["intermediates"]),
                     kernels="xla")(v)
  got = compute.jit(lambda v: fast.apply(v, src, kp2, kp, depth,
                                         mutable=["intermediates"]),
                    kernels="cpu", inference=True)(v)
  np.testing.assert_allclose(got[0]["prediction"], want[0]["prediction"], atol=1e-5)
  b_want = want[1]["intermediates"]["bottleneck_out"][0]
  b_got = got[1]["intermediates"]["bottleneck_out"][0]
  np.testing.assert_allclose(b_got, b_want, atol=1e-4 * float(jnp.abs(b_want).max()))
