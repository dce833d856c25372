"""Synchronised BatchNorm under shard_map: forward, running statistics and
gradients on 4 devices equal one device on the whole batch (SyncBatchNorm)."""


import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from dagan_jax.models.layers import BatchNorm, Conv2d, sync_batch_norm
from dagan_jax.training import parallel


class _Net(nn.Module):

  @nn.compact
  def __call__(self, x):
    x = Conv2d(8, 3, padding=1)(x)
    x = BatchNorm()(x)  # synchronised by the context below
    x = jnp.tanh(x)
    x = Conv2d(4, 3, padding=1)(x)
    x = BatchNorm()(x)
    return x


def _grads(num_devices, x, variables):
  mesh = parallel.make_mesh(jax.devices()[:num_devices])
  net = _Net()

  def per_device(variables, x):
    def loss(params):
      with sync_batch_norm(parallel.DATA_AXIS):
        y, upd = net.apply({"params": params, "batch_stats": variables["batch_stats"]},
                           x, mutable=["batch_stats"])
      return jnp.mean(jnp.sin(y) * jnp.arange(y.shape[-1])), upd["batch_stats"]
    (l, stats), g = jax.value_and_grad(loss, has_aux=True)(variables["params"])
    return (jax.lax.pmean(l, parallel.DATA_AXIS), jax.lax.pmean(g, parallel.DATA_AXIS),
            stats)

  f = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P("data")),
                            out_specs=(P(), P(), P()), check_vma=False))
  return jax.device_get(f(variables, x))


def test_sync_batchnorm_gradients_match_single_device():
  x = jax.random.normal(jax.random.key(0), (8, 6, 6, 3))
  variables = _Net().init(jax.random.key(1), x)
  l1, g1, s1 = _grads(1, x, variables)
  l4, g4, s4 = _grads(4, x, variables)
  np.testing.assert_allclose(l1, l4, rtol=1e-6, atol=1e-7)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g4)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s4)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
