"""Parameter counts: exact against the official models.

The official figures (shared/fixtures/README.md, 15 keypoints): keypoint
detector 14.26M, generator 46.10M, discriminator 2.77M, 63.1M in total; the
small fixture's meta.json records the exact counts of the official modules
at its config (depth encoder including the unused ImageNet ``fc``, which we
do not build: 512 * 1000 + 1000 parameters).
"""

from __future__ import annotations

import json
import pathlib

import pytest

from dagan_jax.config import apply_overrides, default_config, load_config
from dagan_jax.models import build

#: Exact trainable-parameter counts of our networks at the official config.
OFFICIAL = {"kp_detector": 14_262_519, "generator": 46_096_917,
            "discriminator": 2_774_209, "depth_encoder": 11_176_512,
            "depth_decoder": 3_152_724}
RESNET18_FC = 512 * 1000 + 1000


def test_official_config_counts():
  counts = build.param_counts(default_config())
  assert counts == OFFICIAL
  assert round(counts["kp_detector"] / 1e6, 2) == 14.26
  assert round(counts["generator"] / 1e6, 2) == 46.10
  assert round(counts["discriminator"] / 1e6, 2) == 2.77
  total = counts["kp_detector"] + counts["generator"] + counts["discriminator"]
  assert round(total / 1e6, 1) == 63.1


def test_variant_counts():
  spade = build.param_counts(apply_overrides(default_config(), [
      "model_params.generator_type=SPADEDepthAwareGenerator",
      "model_params.depth_params.num_layers=50"]))
  assert spade["generator"] == 67_545_305
  assert spade["depth_encoder"] == 23_508_032  # ResNet-50 without fc
  assert spade["depth_decoder"] == 9_014_100
  pose = build.param_counts(default_config(), with_pose=True)
  assert pose["pose_encoder"] == 11_185_920  # ResNet-18, 6 input channels
  assert pose["pose_decoder"] == 1_323_792


def test_small_fixture_counts_match_the_official_modules(fixture_dir):
  root = pathlib.Path(fixture_dir)
  meta = json.loads((root / "meta.json").read_text())
  if "param_counts" not in meta:
    pytest.skip("fixture meta.json has no param_counts")
  cfg = apply_overrides(load_config(root / "config.yaml"), [
      f"model_params.common_params.num_kp={meta['kp_num']}",
      f"model_params.generator_type={meta['generator']}"])
  counts = build.param_counts(cfg)
  want = dict(meta["param_counts"])
  want["depth_encoder"] -= RESNET18_FC if want["depth_encoder"] < 20e6 else 2048 * 1000 + 1000
  assert counts == want
