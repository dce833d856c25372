"""DaGAN++'s three-headed pose network and uncertainty head (Eq. 2, 8, Fig. 5f)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flax import traverse_util

from dagan_jax import compute
from dagan_jax.models.pose import PoseDecoder, PoseEncoder
from dagan_jax.models.uncertainty import (POSE_PARTS, UncertaintyHead,
                                          UncertaintyPoseNetwork,
                                          merge_pose_variables,
                                          num_up_blocks_for,
                                          split_pose_variables)


def random_variables(module, *args, seed: int = 0) -> dict:
  """Init-like variables drawn with numpy from the abstract tree (compiling
  ``init`` of a ResNet-18 under jit costs ~10 s on the 2-core CI machine):
  kernels ~ U(+-1/sqrt(fan_in)), other params ~ U(-0.1, 0.1) (norm scales
  1 +), running mean 0 / var 1."""
  abstract = jax.eval_shape(module.init, jax.random.key(0), *args)
  rng = np.random.default_rng(seed)
  out = {}
  for path, s in traverse_util.flatten_dict(dict(abstract)).items():
    if path[0] == "batch_stats":
      value = np.zeros(s.shape) if path[-1] == "mean" else np.ones(s.shape)
    elif path[-1] == "kernel":
      bound = 1.0 / np.sqrt(np.prod(s.shape[:-1]))
      value = rng.uniform(-bound, bound, s.shape)
    else:
      value = (path[-1] == "scale") + rng.uniform(-0.1, 0.1, s.shape)
    out[path] = jnp.asarray(value, s.dtype)
  return traverse_util.unflatten_dict(out)


def test_num_up_blocks():
  # ResNet-18 pose encoder at 256x256: 512 x 8 x 8 -> 5 up-blocks.
  assert num_up_blocks_for((8, 8), (256, 256)) == 5
  # The paper's [1024 x 2 x 2] would need 7.
  assert num_up_blocks_for((2, 2), (256, 256)) == 7
  assert num_up_blocks_for((2, 2), (64, 64)) == 5
  assert num_up_blocks_for((3, 3), (80, 80)) == 5  # 96 >= 80, resized down
  assert num_up_blocks_for((4, 4), (4, 4)) == 0


@pytest.mark.parametrize("size", [(256, 256), (512, 512)])
def test_pose_network_shapes_at_paper_size(size):
  """Shapes of all heads at the paper's resolutions (tracing only)."""
  net = UncertaintyPoseNetwork(num_layers=18, image_size=size)
  pair = jax.ShapeDtypeStruct((2,) + size + (6,), jnp.float32)
  variables = jax.eval_shape(net.init, jax.random.key(0), pair)
  out = jax.eval_shape(net.apply, variables, pair)
  assert out["axisangle"].shape == (2, 2, 1, 3)
  assert out["translation"].shape == (2, 2, 1, 3)
  assert out["K"].shape == (2, 3, 3)
  assert out["intrinsics"].shape == (2, 3, 3)
  assert out["uncertainty"].shape == (2,) + size + (1,)
  head = variables["params"]["uncertainty_head"]
  n = num_up_blocks_for((size[0] // 32, size[1] // 32), size)
  assert sorted(head) == sorted([f"up_blocks_{j}" for j in range(n)] + ["final"])
  # first up-block reads the 512-channel stride-32 encoder map
  assert head["up_blocks_0"]["conv"]["kernel"].shape == (3, 3, 512, 256)
  assert head["final"]["kernel"].shape == (3, 3, 16, 1)
  assert set(variables["batch_stats"]) == {"pose_encoder", "uncertainty_head"}


def test_pose_and_intrinsics_heads_are_the_reused_decoder():
  """With the same variables, pose and K equal Face-Depth-Network's
  PoseEncoder + PoseDecoder run on their own; U is a map in (0, 1)."""
  size = (64, 64)
  net = UncertaintyPoseNetwork(num_layers=18, image_size=size)
  rng = np.random.default_rng(0)
  pair = jnp.asarray(rng.uniform(size=(2,) + size + (6,)), jnp.float32)

  variables = random_variables(net, pair)
  parts = split_pose_variables(variables)

  @jax.jit
  def run(variables, parts, pair):
    out = net.apply(variables, pair)
    feats = PoseEncoder(18).apply(parts["pose_encoder"], pair)
    ref = PoseDecoder(image_size=size).apply(parts["pose_decoder"], [feats])
    with compute.use(inference=True):  # BatchNorm folded into the convs
      return out, ref, net.apply(variables, pair)

  out, ref, out_fast = run(variables, parts, pair)
  for key in ("axisangle", "translation", "K", "uncertainty"):
    np.testing.assert_allclose(out_fast[key], out[key], rtol=1e-4, atol=1e-5)
  for key in ("axisangle", "translation", "K"):
    np.testing.assert_allclose(out[key], ref[key], rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(out["intrinsics"], out["K"])
  u = np.asarray(out["uncertainty"])
  assert u.shape == (2, 64, 64, 1)
  assert np.all((u > 0) & (u < 1)) and u.std() > 0
  # per-network layout round trip
  assert set(parts) == set(POSE_PARTS)
  assert "batch_stats" not in parts["pose_decoder"]
  merged = merge_pose_variables(parts)
  jax.tree.map(np.testing.assert_array_equal, merged, variables)


def test_uncertainty_head_trains():
  """Train mode updates the head's BatchNorm statistics and the gradient of
  a loss on U reaches every head parameter (incl. the sigmoid's conv)."""
  head = UncertaintyHead(image_size=(32, 32))
  rng = np.random.default_rng(1)
  feat = jnp.asarray(rng.normal(size=(2, 4, 4, 12)), jnp.float32)
  variables = random_variables(head, feat)
  assert sorted(variables["params"]) == ["final", "up_blocks_0",
                                         "up_blocks_1", "up_blocks_2"]

  def loss(params):
    u, state = head.apply({"params": params,
                           "batch_stats": variables["batch_stats"]}, feat,
                          mutable=["batch_stats"])
    # Eq. 7-like: weighted error / U + log U for a fixed error map
    err = jnp.linspace(0.1, 0.9, 32 * 32).reshape(1, 32, 32, 1)
    return jnp.mean(err / u + jnp.log(u)), (u, state)

  grads, (u, state) = jax.jit(jax.grad(loss, has_aux=True))(variables["params"])
  assert u.shape == (2, 32, 32, 1)
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()),
                       state["batch_stats"], variables["batch_stats"])
  assert min(jax.tree.leaves(moved)) > 0
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    name = jax.tree_util.keystr(path)
    if name.endswith("['conv']['bias']"):
      continue  # conv -> BN in batch-statistics mode: cancelled exactly
    assert float(jnp.abs(g).max()) > 1e-6, name


def test_non_power_of_two_size_is_resized():
  head = UncertaintyHead(image_size=(80, 72))
  feat = jax.ShapeDtypeStruct((1, 3, 3, 8), jnp.float32)
  variables = jax.eval_shape(head.init, jax.random.key(0), feat)
  assert len([k for k in variables["params"] if k.startswith("up_")]) == 5
  out = jax.eval_shape(head.apply, variables, feat)
  assert out.shape == (1, 80, 72, 1)


def test_rejects_single_frame():
  net = UncertaintyPoseNetwork(image_size=(64, 64))
  with pytest.raises(ValueError, match="two RGB frames"):
    jax.eval_shape(net.init, jax.random.key(0),
                   jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
