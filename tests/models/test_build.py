"""build_models / init_variables / the pure forward functions on a tiny config."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dagan_jax.config import apply_overrides, default_config
from dagan_jax.errors import ConfigError
from dagan_jax.models import build

TINY = [
    "dataset_params.frame_shape=[128, 128, 3]",
    "model_params.common_params.num_kp=5",
    "model_params.kp_detector_params.block_expansion=4",
    "model_params.kp_detector_params.max_features=16",
    "model_params.generator_params.block_expansion=4",
    "model_params.generator_params.max_features=16",
    "model_params.generator_params.num_bottleneck_blocks=1",
    "model_params.generator_params.dense_motion_params.block_expansion=4",
    "model_params.generator_params.dense_motion_params.max_features=16",
    "model_params.discriminator_params.block_expansion=4",
    "model_params.discriminator_params.max_features=16",
    "model_params.discriminator_params.scales=[1, 0.5]",
]


@pytest.fixture(scope="module")
def tiny():
  cfg = apply_overrides(default_config(), TINY)
  models = build.build_models(cfg)
  variables = build.init_variables(models, jax.random.key(0), cfg)
  return cfg, models, variables


def test_init_and_forward_shapes(tiny):
  _, models, v = tiny
  assert set(v) == set(build.NETWORKS)
  assert "batch_stats" in v["generator"] and "batch_stats" not in v["discriminator"]
  b = 2
  img = jax.random.uniform(jax.random.key(1), (b, 128, 128, 3))
  shape = lambda f, *a: jax.eval_shape(f, *a)  # noqa: E731  (shapes only)
  disp = shape(lambda x: build.depth_fn(models, v, x), img)
  assert disp.shape == (b, 128, 128, 1)
  outs = shape(lambda x: build.depth_outputs(models, v, x), img)
  assert [outs[f"disp{s}"].shape[1] for s in range(4)] == [128, 64, 32, 16]
  disp = jnp.full((b, 128, 128, 1), 0.5)
  kp = build.keypoints_fn(models, v, img, disp)
  assert kp["value"].shape == (b, 5, 2) and kp["jacobian"].shape == (b, 5, 2, 2)
  # The official Jacobian head starts at the identity.
  np.testing.assert_allclose(kp["jacobian"], np.broadcast_to(np.eye(2), (b, 5, 2, 2)),
                             atol=1e-6)
  out = shape(lambda x: build.generate_fn(models, v, x, kp, kp, disp), img)
  assert out["prediction"].shape == (b, 128, 128, 3)
  assert out["mask"].shape == (b, 32, 32, 6)
  assert out["sparse_deformed"].shape == (b, 6, 32, 32, 3)
  assert out["deformation"].shape == (b, 32, 32, 2)
  assert out["occlusion_map"].shape == (b, 32, 32, 1)
  assert out["deformed"].shape == (b, 128, 128, 3)
  pyramid = {"prediction_1": img, "prediction_0.5": img[:, ::2, ::2]}
  d = shape(lambda p: build.discriminate_fn(models, v, p, kp), pyramid)
  assert sorted(d) == ["feature_maps_0.5", "feature_maps_1", "prediction_map_0.5",
                       "prediction_map_1"]
  assert len(d["feature_maps_1"]) == 4 and d["prediction_map_1"].shape == (b, 10, 10, 1)
  with pytest.raises(ValueError, match="pass disp"):
    build.keypoints_fn(models, v, img)


def test_train_mode_updates_batch_stats_eval_does_not(tiny):
  _, models, v = tiny
  img = jax.random.uniform(jax.random.key(2), (2, 128, 128, 4))
  out_eval = models.kp_detector.apply(v["kp_detector"], img)
  out_train, upd = models.kp_detector.apply(v["kp_detector"], img,
                                            mutable=["batch_stats"])
  before = v["kp_detector"]["batch_stats"]["predictor"]["encoder"]["down_blocks_0"]["norm"]
  after = upd["batch_stats"]["predictor"]["encoder"]["down_blocks_0"]["norm"]
  assert not np.allclose(before["mean"], after["mean"])
  assert not np.allclose(out_eval["value"], out_train["value"])


def test_generator_intermediates_and_attention_swap(tiny):
  _, models, v = tiny
  img = jnp.zeros((1, 128, 128, 3))
  disp = jnp.full((1, 128, 128, 1), 0.5)
  k = jax.random.normal(jax.random.key(4), (1, 5, 2)) * 0.3
  kp_s = {"value": k, "jacobian": jnp.broadcast_to(jnp.eye(2), (1, 5, 2, 2))}
  kp_d = {"value": k + 0.05, "jacobian": kp_s["jacobian"]}
  gen = models.generator
  _, inter = jax.eval_shape(lambda: gen.apply(v["generator"], img, kp_d, kp_s, disp,
                                              mutable=["intermediates"]))
  i = inter["intermediates"]
  for name in ("enc_out", "src_depth_enc_out", "attn_in_warped", "attn_out",
               "bottleneck_out", "up_out"):
    assert name in i, name
  n = 32 * 32
  assert i["AttnModule"]["attention_rows"][0].shape == (1, n // 128, n)
  assert i["dense_motion_network"]["hourglass_out"][0].shape == (1, 32, 32, 4 + 24)
  # The attention is a swappable function attention(q, k, v) -> (B, N, C).
  calls = []

  def spy(q, k_, v_):
    calls.append((q.shape, k_.shape, v_.shape))
    return jnp.zeros(q.shape[:2] + v_.shape[2:])

  jax.eval_shape(lambda: gen.clone(attention_fn=spy).apply(v["generator"], img,
                                                           kp_d, kp_s, disp))
  assert calls == [((1, n, 2), (1, n, 2), (1, n, 16))]


def test_config_errors():
  with pytest.raises(ConfigError, match="unknown key"):
    build.build_models(_with_extra_key())
  cfg = apply_overrides(default_config(), [
      "model_params.generator_type=SPADEDepthAwareGenerator",
      "model_params.generator_params.num_down_blocks=3"])
  models = build.build_models(cfg)
  with pytest.raises(ValueError, match="num_down_blocks must be 2"):
    build.abstract_variables(models, ("generator",))


def _with_extra_key():
  cfg = default_config()
  with cfg.unlocked():
    cfg.model_params.kp_detector_params.typo_key = 3
  return cfg
