"""The CPU library choice of the package's compiled steps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dagan_jax import xla_options


def _conv_grad(x, k):
  def f(k):
    y = jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.sum(y * y)
  return jax.grad(f)(k)


def test_options_by_backend_and_env(monkeypatch):
  monkeypatch.delenv(xla_options.ENV, raising=False)
  monkeypatch.delenv(xla_options.OPT_LEVEL_ENV, raising=False)
  monkeypatch.delenv(xla_options.FUSION_EMITTERS_ENV, raising=False)
  assert xla_options.compiler_options("gpu") is None
  assert xla_options.compiler_options("cpu") == {
      "xla_cpu_experimental_ynn_fusion_type": ""}
  monkeypatch.setenv(xla_options.ENV, "YNNPACK")
  assert xla_options.compiler_options("cpu") == {
      "xla_cpu_experimental_ynn_fusion_type": xla_options.YNNPACK_DEFAULT}
  monkeypatch.setenv(xla_options.ENV, "mkl")
  with pytest.raises(ValueError, match="DAGAN_JAX_CPU_LIBRARY='mkl'"):
    xla_options.compiler_options("cpu")


def test_jit_uses_eigen_and_matches_default(monkeypatch):
  monkeypatch.delenv(xla_options.ENV, raising=False)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, 32, 32, 16), np.float32))
  k = jnp.asarray(rng.standard_normal((3, 3, 16, 32), np.float32))
  ours = xla_options.jit(_conv_grad).lower(x, k).compile()
  default = jax.jit(_conv_grad).lower(x, k).compile()
  assert "ynn" not in ours.as_text()
  assert "ynn" in default.as_text()  # what the option changes
  np.testing.assert_allclose(ours(x, k), default(x, k), rtol=1e-4, atol=1e-3)


def _option_from_env(monkeypatch, env, value, option, fn, bad, seed, atol):
  """With only ``env=value`` set, the CPU options are Eigen's plus
  ``option`` (none elsewhere), XLA accepts them and ``fn`` computes what the
  default build does; ``env=bad`` is refused, naming the variable."""
  for name in xla_options.ENV_VARS:
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setenv(env, value)
  assert xla_options.compiler_options("cpu") == {
      "xla_cpu_experimental_ynn_fusion_type": "", **option}
  assert xla_options.compiler_options("gpu") is None
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.standard_normal((2, 16, 16, 8), np.float32))
  k = jnp.asarray(rng.standard_normal((3, 3, 8, 16), np.float32))
  np.testing.assert_allclose(xla_options.jit(fn)(x, k), jax.jit(fn)(x, k),
                             rtol=1e-4, atol=atol)
  monkeypatch.setenv(env, bad)
  with pytest.raises(ValueError, match=f"{env}={bad!r}"):
    xla_options.compiler_options("cpu")


def test_llvm_opt_level_from_env(monkeypatch):
  _option_from_env(monkeypatch, xla_options.OPT_LEVEL_ENV, "0",
                   {"xla_backend_optimization_level": 0}, _conv_grad,
                   bad="fast", seed=1, atol=1e-3)


def test_fusion_emitters_from_env(monkeypatch):
  def loss(x, k):  # a convolution and elementwise work around it to fuse
    return jnp.tanh(_conv_grad(jnp.sin(x) * 2.0, k)) + jnp.exp(-k * k)
  _option_from_env(monkeypatch, xla_options.FUSION_EMITTERS_ENV, "0",
                   {"xla_cpu_use_fusion_emitters": False}, loss, bad="off",
                   seed=2, atol=1e-4)
  monkeypatch.setenv(xla_options.FUSION_EMITTERS_ENV, "1")
  assert xla_options.compiler_options("cpu")["xla_cpu_use_fusion_emitters"]
