"""The seam of dagan_jax.compute: the plain program has no CPU kernel in it,
and both kernel sets compute the same training step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax.extend import core as jax_core

from dagan_jax import compute
from dagan_jax.models import layers
from dagan_jax.training import parallel
from dagan_jax.training import talking_head as th
import train_helpers


def _equations(jaxpr):
  """Every equation of a (closed) jaxpr and of the jaxprs inside it."""
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
  for eqn in jaxpr.eqns:
    yield eqn
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        if isinstance(sub, (jax_core.Jaxpr, jax_core.ClosedJaxpr)):
          yield from _equations(sub)


def _kernels_used(fn, *args):
  """(primitives, name scopes of the CPU kernel set) of ``fn``'s program."""
  eqns = list(_equations(jax.make_jaxpr(fn)(*args)))
  prims = {e.primitive.name for e in eqns}
  scopes = {s for e in eqns for s in str(e.source_info.name_stack).split("/")
            if "xla_cpu" in s}
  return prims, scopes


def test_cpu_kernels_show_in_the_program_and_plain_has_none():
  """A ResBlock at the width of DaGAN's bottleneck, forward and backward in
  training mode: the CPU kernel set runs Winograd and staged sums (named
  scopes ``xla_cpu_*``, optimisation barriers); the plain set runs XLA's
  convolutions and nothing of the CPU package."""
  block = layers.ResBlock2d(3, 1)
  x = jnp.ones((2, 32, 32, 64))
  v = block.init(jax.random.key(0), x)

  def loss(params, x):
    y, _ = block.apply({**v, "params": params}, x, mutable=["batch_stats"])
    return jnp.sum(y ** 2)

  # A new function per kernel set: JAX caches a function's trace, and the
  # settings in force are not part of its key (hence compute.jit).
  with compute.use("cpu"):
    prims, scopes = _kernels_used(jax.grad(loss), v["params"], x)
  assert {"xla_cpu_winograd", "xla_cpu_staged_sum"} <= scopes, scopes
  assert "optimization_barrier" in prims
  with compute.use("xla"):
    prims, scopes = _kernels_used(jax.grad(loss), v["params"], x)
  assert not scopes and "optimization_barrier" not in prims
  assert "conv_general_dilated" in prims and "dot_general" not in prims


@pytest.mark.slow
def test_plain_training_step_has_only_xla_kernels_and_the_same_numbers(
    shared_dir):
  """The talking-head step with ``compute.kernels='xla'`` (what GPUs and
  TPUs run) holds no op of the CPU kernel set and no optimisation barrier,
  its convolutions are XLA's, and its first step gives the losses and
  gradient norms of the step a CPU user runs ('auto'), to float32
  rounding.

  The plain program is compiled here with the CPU kernel set's compile
  options (Eigen convolutions), so that only the kernels differ. The loss
  terms (forward values) agree to 1e-5. The gradient norms of the first
  step of a randomly initialised GAN amplify float32 rounding by orders of
  magnitude: switching XLA:CPU's convolution library alone (the same
  program) moves the keypoint detector's by 3e-3 here, so they are held to
  1e-2, which a wrong kernel (an error of order one) still fails."""
  root = str(shared_dir / "data" / "vox_mini")
  cfg = train_helpers.tiny_config(root)
  batch = train_helpers.fixed_batch(cfg)
  mesh = parallel.make_mesh(jax.devices()[:1])
  results = {}
  for kernels in ("xla", "auto"):
    cfg_k = train_helpers.tiny_config(root, overrides=[f"compute.kernels={kernels}"])
    task = th.make_task(cfg_k, global_batch_size=4, steps_per_epoch=10,
                        vgg=train_helpers.VGGFeatures(arch="vgg16"))
    assert task.kernels == kernels
    frozen, _ = th.load_frozen(cfg_k, task)
    variables = th.build_lib.init_variables(task.models, jax.random.key(0),
                                            names=th.TRAINED)
    state = parallel.replicate(th.create_train_state(task, variables), mesh)
    frozen = parallel.replicate(frozen, mesh)
    step = th.make_train_step(task, mesh)
    args = (state, parallel.global_batch(batch, mesh), frozen, jax.random.key(1))
    if kernels == "xla":
      prims, scopes = _kernels_used(step, *args)
      assert not scopes, scopes
      assert "optimization_barrier" not in prims
      assert "conv_general_dilated" in prims
      text = step.lower(*args).as_text()
      assert "optimization_barrier" not in text and "stablehlo.convolution" in text
    compiled = step.lower(*args).compile(
        compiler_options=compute.compiler_options("cpu"))
    _, metrics = compiled(*args)
    results[kernels] = parallel.to_host(metrics)
  plain, auto = results["xla"], results["auto"]
  assert plain["finite"] == auto["finite"] == 1.0
  for name in sorted(plain):
    rtol = 1e-2 if name.startswith("grad_norm") else 1e-5
    np.testing.assert_allclose(plain[name], auto[name], rtol=rtol, atol=1e-7,
                               err_msg=name)
