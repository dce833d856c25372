"""models/layers.py against torch (the reference the official code runs on)."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dagan_jax import compute
from dagan_jax.convert.torch_to_flax import oihw_to_hwio
from dagan_jax.models import layers

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _nchw(x):
  return torch.tensor(np.asarray(x).transpose(0, 3, 1, 2))


def _nhwc(t):
  return t.detach().numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("kw", [
    dict(kernel_size=3, padding=1),
    dict(kernel_size=7, padding=3, stride=2),
    dict(kernel_size=4, padding=0),
    dict(kernel_size=3, padding=2, dilation=2, groups=2),
    dict(kernel_size=(3, 5), padding=(1, 2)),
])
def test_conv2d_matches_torch(kw):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 13, 11, 4)).astype(np.float32)
  tconv = torch.nn.Conv2d(4, 6, **kw)
  params = {"kernel": oihw_to_hwio(tconv.weight.detach().numpy()),
            "bias": tconv.bias.detach().numpy()}
  y = layers.Conv2d(6, **kw).apply({"params": params}, jnp.asarray(x))
  np.testing.assert_allclose(y, _nhwc(tconv(_nchw(x))), atol=2e-6)


def test_conv2d_reflect_padding_is_monodepth_conv3x3():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(1, 8, 9, 3)).astype(np.float32)
  tconv = torch.nn.Conv2d(3, 5, 3)
  params = {"kernel": oihw_to_hwio(tconv.weight.detach().numpy()),
            "bias": tconv.bias.detach().numpy()}
  y = layers.Conv2d(5, 3, padding=1, padding_mode="reflect").apply(
      {"params": params}, jnp.asarray(x))
  ref = tconv(torch.nn.ReflectionPad2d(1)(_nchw(x)))
  np.testing.assert_allclose(y, _nhwc(ref), atol=2e-6)


def test_conv2d_default_init_is_torch_uniform():
  v = layers.Conv2d(64, 3).init(jax.random.key(0), jnp.zeros((1, 8, 8, 32)))
  bound = 1 / np.sqrt(32 * 9)
  k = np.asarray(v["params"]["kernel"])
  assert k.shape == (3, 3, 32, 64)
  assert np.abs(k).max() <= bound and np.abs(k).max() > 0.95 * bound
  assert abs(k.std() - bound / np.sqrt(3)) < 0.02 * bound


def _torch_bn(c, seed):
  g = torch.Generator().manual_seed(seed)
  bn = torch.nn.BatchNorm2d(c)
  with torch.no_grad():
    bn.weight.copy_(1 + 0.2 * torch.randn(c, generator=g))
    bn.bias.copy_(0.1 * torch.randn(c, generator=g))
    bn.running_mean.copy_(0.3 * torch.randn(c, generator=g))
    bn.running_var.copy_(torch.rand(c, generator=g) + 0.5)
  return bn


def _bn_vars(bn):
  return {"params": {"scale": bn.weight.detach().numpy(),
                     "bias": bn.bias.detach().numpy()},
          "batch_stats": {"mean": bn.running_mean.numpy().copy(),
                          "var": bn.running_var.numpy().copy()}}


def test_batchnorm_eval_uses_running_stats():
  bn = _torch_bn(5, 0).eval()
  x = np.random.default_rng(2).normal(size=(3, 6, 7, 5)).astype(np.float32)
  y = layers.BatchNorm().apply(_bn_vars(bn), jnp.asarray(x))
  np.testing.assert_allclose(y, _nhwc(bn(_nchw(x))), atol=2e-6)


def test_batchnorm_train_normalises_by_batch_and_updates_like_torch():
  bn = _torch_bn(5, 1)
  variables = _bn_vars(bn)
  x = np.random.default_rng(3).normal(1.0, 2.0, size=(3, 6, 7, 5)).astype(np.float32)
  bn.train()
  ref = bn(_nchw(x))
  y, upd = layers.BatchNorm().apply(variables, jnp.asarray(x),
                                    mutable=["batch_stats"])
  np.testing.assert_allclose(y, _nhwc(ref), atol=3e-6)
  np.testing.assert_allclose(upd["batch_stats"]["mean"], bn.running_mean, atol=1e-6)
  np.testing.assert_allclose(upd["batch_stats"]["var"], bn.running_var, rtol=1e-6)
  # An explicit override keeps eval behaviour even with mutable batch_stats.
  y2, upd2 = layers.BatchNorm(use_running_average=True).apply(
      variables, jnp.asarray(x), mutable=["batch_stats"])
  np.testing.assert_array_equal(upd2["batch_stats"]["mean"],
                                variables["batch_stats"]["mean"])
  assert not np.allclose(y2, y)


@pytest.mark.parametrize("shape", [(3, 6, 7, 5), (2, 64, 48, 12)])
def test_batchnorm_train_gradients_equal_torch(shape):
  """Training-mode gradients (through the batch statistics) equal torch's
  input, scale and bias gradients; the larger shape takes the staged sums."""
  c = shape[-1]
  bn = _torch_bn(c, 7)
  bn.train()
  rng = np.random.default_rng(8)
  x = rng.normal(0.5, 2.0, size=shape).astype(np.float32)
  ct = rng.normal(size=shape).astype(np.float32)
  xt = _nchw(x).clone().requires_grad_(True)
  (bn(xt) * _nchw(ct)).sum().backward()
  variables = _bn_vars(bn)

  def loss(params, xs):
    y, _ = layers.BatchNorm().apply({**variables, "params": params}, xs,
                                    mutable=["batch_stats"])
    return jnp.sum(y * ct)

  g_params, g_x = jax.grad(loss, argnums=(0, 1))(variables["params"], jnp.asarray(x))
  scale = float(np.abs(xt.grad.numpy()).max())
  np.testing.assert_allclose(g_x, _nhwc(xt.grad), atol=2e-5 * scale)
  np.testing.assert_allclose(g_params["scale"], bn.weight.grad.numpy(), rtol=2e-5,
                             atol=1e-3)
  np.testing.assert_allclose(g_params["bias"], bn.bias.grad.numpy(), rtol=2e-5,
                             atol=1e-3)


def test_batchnorm_train_gradients_synchronised_like_one_big_batch():
  """Under a named axis the input gradient of each shard is that of the
  whole batch; the parameter gradients are each shard's own sums (they add
  up to the whole batch's)."""
  bn = _torch_bn(4, 2)
  variables = _bn_vars(bn)
  rng = np.random.default_rng(9)
  x = jnp.asarray(rng.normal(size=(8, 5, 5, 4)).astype(np.float32))
  ct = jnp.asarray(rng.normal(size=(8, 5, 5, 4)).astype(np.float32))

  def loss(params, xs, cts, axis_name=None):
    with layers.sync_batch_norm(axis_name):
      y, _ = layers.BatchNorm().apply(
          {**variables, "params": params}, xs, mutable=["batch_stats"])
    return jnp.sum(y * cts)

  gp, gx = jax.grad(loss, argnums=(0, 1))(variables["params"], x, ct)
  sp, sx = jax.vmap(jax.grad(functools.partial(loss, axis_name="data"), argnums=(0, 1)),
                    in_axes=(None, 0, 0), axis_name="data")(
      variables["params"], x.reshape(4, 2, 5, 5, 4), ct.reshape(4, 2, 5, 5, 4))
  np.testing.assert_allclose(sx.reshape(x.shape), gx, atol=1e-5)
  for name in ("scale", "bias"):
    np.testing.assert_allclose(sp[name].sum(0), gp[name], rtol=1e-5, atol=1e-5)


def test_batchnorm_init_does_not_update_running_stats():
  v = layers.BatchNorm().init(jax.random.key(0), jnp.full((2, 3, 3, 4), 7.0))
  np.testing.assert_array_equal(v["batch_stats"]["mean"], 0)
  np.testing.assert_array_equal(v["batch_stats"]["var"], 1)


def test_sync_batch_norm_is_like_one_big_batch():
  """Per-device shards under a named axis give the statistics (and running
  averages, with the global unbiased count) of the whole batch."""
  bn = _torch_bn(4, 2)
  variables = _bn_vars(bn)
  x = np.random.default_rng(4).normal(size=(8, 5, 5, 4)).astype(np.float32)
  whole, upd = layers.BatchNorm().apply(variables, jnp.asarray(x),
                                        mutable=["batch_stats"])

  def shard(xs):
    with layers.sync_batch_norm("data"):
      return layers.BatchNorm().apply(variables, xs, mutable=["batch_stats"])

  y, upd_s = jax.vmap(shard, axis_name="data")(jnp.asarray(x).reshape(4, 2, 5, 5, 4))
  np.testing.assert_allclose(y.reshape(x.shape), whole, atol=2e-6)
  np.testing.assert_allclose(upd_s["batch_stats"]["var"][0],
                             upd["batch_stats"]["var"], rtol=1e-6)


def test_instance_norm_matches_torch():
  x = np.random.default_rng(5).normal(2.0, 3.0, size=(2, 9, 7, 3)).astype(np.float32)
  tin = torch.nn.InstanceNorm2d(3, affine=True)
  with torch.no_grad():
    tin.weight.copy_(torch.tensor([0.5, 1.5, -1.0]))
    tin.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
  v = {"params": {"scale": tin.weight.detach().numpy(), "bias": tin.bias.detach().numpy()}}
  y = layers.InstanceNorm(use_scale=True, use_bias=True).apply(v, jnp.asarray(x))
  np.testing.assert_allclose(y, _nhwc(tin(_nchw(x))), atol=3e-6)


def _sn_vars(conv):
  sd = conv.state_dict()
  return {"params": {"kernel": oihw_to_hwio(sd["weight_orig"].numpy()),
                     "bias": sd["bias"].numpy()},
          "batch_stats": {"u": sd["weight_u"].numpy().copy(),
                          "v": sd["weight_v"].numpy().copy()}}


def test_spectral_norm_eval_and_train_match_torch():
  torch.manual_seed(0)
  conv = torch.nn.utils.spectral_norm(torch.nn.Conv2d(6, 5, 3, padding=1))
  x = np.random.default_rng(6).normal(size=(2, 8, 8, 6)).astype(np.float32)
  module = layers.SNConv2d(5, 3, padding=1)
  for _ in range(3):  # a few training steps so u, v are not the initial ones
    conv.train()
    conv(_nchw(x))
  # eval: weight_orig / (u . W v) with the stored vectors, no update.
  v_eval = _sn_vars(conv)
  conv.eval()
  with torch.no_grad():
    ref_eval = conv(_nchw(x))
  y = module.apply(v_eval, jnp.asarray(x))
  np.testing.assert_allclose(y, _nhwc(ref_eval), atol=2e-6)
  # train: one power iteration, then the new u, v are stored.
  v_before = _sn_vars(conv)
  conv.train()
  ref_train = conv(_nchw(x))
  y, upd = module.apply(v_before, jnp.asarray(x), mutable=["batch_stats"])
  np.testing.assert_allclose(y, _nhwc(ref_train), atol=2e-6)
  np.testing.assert_allclose(upd["batch_stats"]["u"], conv.weight_u, atol=1e-6)
  np.testing.assert_allclose(upd["batch_stats"]["v"], conv.weight_v, atol=1e-6)


def test_spectral_norm_gradient_flows_only_through_the_kernel():
  module = layers.SNConv2d(3, 3, padding=1)
  x = jnp.ones((1, 4, 4, 2))
  v = module.init(jax.random.key(1), x)
  g = jax.grad(lambda p: module.apply({"params": p,
                                       "batch_stats": v["batch_stats"]}, x).sum())(
      v["params"])
  assert np.isfinite(np.asarray(g["kernel"])).all() and np.abs(g["kernel"]).max() > 0


def test_avg_pool_and_nearest_upsample_match_torch():
  x = np.random.default_rng(7).normal(size=(1, 7, 9, 2)).astype(np.float32)
  np.testing.assert_allclose(layers.avg_pool2(jnp.asarray(x)),
                             _nhwc(F.avg_pool2d(_nchw(x), 2)), atol=1e-6)
  np.testing.assert_array_equal(layers.upsample_nearest2(jnp.asarray(x)),
                                _nhwc(F.interpolate(_nchw(x), scale_factor=2)))


def test_hourglass_channel_rule():
  """FOMM's rule: out = block_expansion + in_features, encoder capped."""
  hg = layers.Hourglass(block_expansion=8, in_features=44, num_blocks=5,
                        max_features=64)
  x = jnp.zeros((1, 64, 64, 44))
  v = jax.eval_shape(hg.init, jax.random.key(0), x)
  out = jax.eval_shape(hg.apply, v, x)
  assert out.shape == (1, 64, 64, 52)
  p = v["params"]
  assert p["encoder"]["down_blocks_0"]["conv"]["kernel"].shape == (3, 3, 44, 16)
  assert p["encoder"]["down_blocks_4"]["conv"]["kernel"].shape == (3, 3, 64, 64)
  assert p["decoder"]["up_blocks_1"]["conv"]["kernel"].shape == (3, 3, 128, 64)
  assert p["decoder"]["up_blocks_4"]["conv"]["kernel"].shape == (3, 3, 32, 8)


class _Wrap(nn.Module):
  @nn.compact
  def __call__(self, x):
    return layers.ResBlock2d(name="r")(x)


def test_resblock_is_preactivation_residual():
  x = np.random.default_rng(8).normal(size=(1, 6, 6, 4)).astype(np.float32)
  v = _Wrap().init(jax.random.key(2), jnp.asarray(x))
  p, s = v["params"]["r"], v["batch_stats"]["r"]
  c1 = torch.nn.Conv2d(4, 4, 3, padding=1)
  c2 = torch.nn.Conv2d(4, 4, 3, padding=1)
  with torch.no_grad():
    for c, name in ((c1, "conv1"), (c2, "conv2")):
      c.weight.copy_(torch.tensor(np.asarray(p[name]["kernel"]).transpose(3, 2, 0, 1)))
      c.bias.copy_(torch.tensor(np.asarray(p[name]["bias"])))

  def bn(t, n):
    return (t - torch.tensor(np.asarray(s[n]["mean"]))[:, None, None]) / torch.sqrt(
        torch.tensor(np.asarray(s[n]["var"]))[:, None, None] + 1e-5)

  t = _nchw(x)
  ref = c2(F.relu(bn(c1(F.relu(bn(t, "norm1"))), "norm2"))) + t
  np.testing.assert_allclose(_Wrap().apply(v, jnp.asarray(x)), _nhwc(ref), atol=3e-6)


@pytest.mark.parametrize("h,w", [(16, 16), (5, 7)])
def test_upsample2_conv3x3_equals_upsample_then_conv(h, w):
  rng = np.random.default_rng(9)
  x = jnp.asarray(rng.normal(size=(2, h, w, 6)).astype(np.float32))
  k = jnp.asarray(rng.normal(size=(3, 3, 6, 5)).astype(np.float32))
  b = jnp.asarray(rng.normal(size=(5,)).astype(np.float32))
  want = layers.conv2d(layers.upsample_nearest2(x), k, b, padding=1)
  np.testing.assert_allclose(layers.upsample2_conv3x3(x, k, b), want, atol=1e-5)


def test_fold_batchnorm_is_conv_then_eval_batchnorm():
  rng = np.random.default_rng(10)
  x = jnp.asarray(rng.normal(size=(1, 9, 9, 4)).astype(np.float32))
  k = jnp.asarray(rng.normal(size=(3, 3, 4, 6)).astype(np.float32))
  b, mean, beta = (jnp.asarray(rng.normal(size=6).astype(np.float32)) for _ in range(3))
  var = jnp.asarray(rng.uniform(0.5, 2, size=6).astype(np.float32))
  scale = jnp.asarray(rng.uniform(0.5, 2, size=6).astype(np.float32))
  y = layers.conv2d(x, k, b, padding=1)
  want = (y - mean) / jnp.sqrt(var + 1e-5) * scale + beta
  kf, bf = layers.fold_batchnorm(k, b, mean, var, scale, beta)
  np.testing.assert_allclose(layers.conv2d(x, kf, bf, padding=1), want, atol=2e-5)


@pytest.mark.parametrize("block,h", [(layers.UpBlock2d, 16), (layers.UpBlock2d, 4),
                                     (layers.DownBlock2d, 32), (layers.SameBlock2d, 8)])
def test_inference_rewrites_blocks_equal_plain_blocks(block, h):
  """The inference rewrites (phase convs, BatchNorm folding) change nothing
  but rounding in eval mode, and nothing at all in training mode."""
  x = jax.random.normal(jax.random.key(3), (2, h, h, 8))
  plain = block(16)
  v = plain.init(jax.random.key(4), x)
  v["batch_stats"] = jax.tree.map(lambda a: a + 0.5, v["batch_stats"])
  v["params"]["norm"]["scale"] = v["params"]["norm"]["scale"] * 1.7
  with compute.use(inference=True):
    got = plain.apply(v, x)
  np.testing.assert_allclose(got, plain.apply(v, x), atol=2e-5)
  yp, sp = plain.apply(v, x, mutable=["batch_stats"])
  with compute.use(inference=True):
    yf, sf = plain.apply(v, x, mutable=["batch_stats"])
  np.testing.assert_array_equal(yp, yf)
  np.testing.assert_array_equal(sp["batch_stats"]["norm"]["mean"],
                                sf["batch_stats"]["norm"]["mean"])


def test_upblock_training_phase_form_equals_upsample_then_conv():
  """In training mode an UpBlock2d on >= PHASE_MIN_PIXELS inputs runs its
  conv in the phase form: same output, batch statistics and gradients as
  nearest x2 + 3x3 conv + batch-statistics BatchNorm, up to rounding."""
  h = 16
  assert h * h >= layers.PHASE_MIN_PIXELS
  x = jax.random.normal(jax.random.key(5), (2, h, h, 8))
  block = layers.UpBlock2d(16)
  v = block.init(jax.random.key(6), x)
  v["params"]["norm"]["scale"] = v["params"]["norm"]["scale"] * 1.7

  def ours(params, x):
    y, st = block.apply({**v, "params": params}, x, mutable=["batch_stats"])
    return jnp.sum(jnp.sin(y)), st

  def reference(params, x):
    y = layers.conv2d(layers.upsample_nearest2(x), params["conv"]["kernel"],
                      params["conv"]["bias"], padding=1)
    mean = y.mean((0, 1, 2))
    var = jnp.square(y - mean).mean((0, 1, 2))
    y = (y - mean) / jnp.sqrt(var + 1e-5) * params["norm"]["scale"] + params["norm"]["bias"]
    return jnp.sum(jnp.sin(nn.relu(y))), mean

  text = jax.jit(ours).lower(v["params"], x).as_text()
  assert "stablehlo.convolution" in text
  (lo, st), go = jax.value_and_grad(ours, argnums=(0, 1), has_aux=True)(v["params"], x)
  (lr, mean), gr = jax.value_and_grad(reference, argnums=(0, 1), has_aux=True)(v["params"], x)
  np.testing.assert_allclose(lo, lr, rtol=1e-5)
  np.testing.assert_allclose(st["batch_stats"]["norm"]["mean"], 0.1 * mean, atol=1e-6)
  # (The conv bias gradient is 0 in exact arithmetic -- batch statistics
  # cancel it -- so it is compared on the scale of 1, like the others.)
  for a, b in zip(jax.tree.leaves(go), jax.tree.leaves(gr)):
    np.testing.assert_allclose(a, b, rtol=1e-4,
                               atol=2e-4 * max(float(jnp.abs(b).max()), 1.0))
  # The phase form really is used: no convolution on the upsampled grid.
  hlo = jax.jit(ours).lower(v["params"], x).compile().as_text()
  assert f"f32[2,{2 * h},{2 * h},8]" not in hlo


def test_vgg_max_pool2_matches_flax_max_pool():
  from dagan_jax.models.vgg import max_pool2
  x = jax.random.normal(jax.random.key(7), (2, 9, 12, 3))
  np.testing.assert_array_equal(
      max_pool2(x), nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID"))
  f1 = lambda x: jnp.sum(jnp.sin(max_pool2(x)))  # noqa: E731
  f2 = lambda x: jnp.sum(jnp.sin(nn.max_pool(x, (2, 2), strides=(2, 2))))  # noqa: E731
  np.testing.assert_allclose(jax.grad(f1)(x), jax.grad(f2)(x), atol=1e-6)
