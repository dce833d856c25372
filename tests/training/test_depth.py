"""The face-depth trainer (DaGAN's FDN and DaGAN++'s uncertainty-aware one)
on tiny 32x32 configs, and its hand-off to the talking-head stage."""

from __future__ import annotations

import math

import numpy as np
import pytest

from train_helpers import tiny_config
from dagan_jax import checkpoints
from dagan_jax.training import depth as depth_trainer
from dagan_jax.training import talking_head as th
from dagan_jax.training.monitor import read_metrics


@pytest.mark.slow
def test_depth_stage_trains_exports_and_feeds_the_talking_head(
    tmp_path, vox_root):
  """The depth stage trains and exports its model, and the talking-head
  stage loads that model frozen. (One test: the trained depth network is
  made once. Two tests sharing a module fixture were run on different xdist
  workers and trained it twice: xdist_group has no effect with pytest 9.2
  and pytest-xdist 3.8.)"""
  workdir = tmp_path / "fdn"
  cfg = tiny_config(vox_root, trainer="depth")
  summary = depth_trainer.train_and_evaluate(cfg, workdir, max_steps=2,
                                             progress=False)
  assert summary["step"] == 2
  rows = read_metrics(workdir)
  assert [r["step"] for r in rows] == [1, 2]
  for r in rows:
    for key in ("photometric", "smoothness", "total", "automask_fraction"):
      assert math.isfinite(r[key]), (key, r)
    assert 0.0 <= r["automask_fraction"] <= 1.0
    assert "uncertainty" not in r
  _, variables = checkpoints.load_model(
      workdir / "model", required=("depth_encoder", "depth_decoder",
                                   "pose_encoder", "pose_decoder"))
  assert set(variables) == {"depth_encoder", "depth_decoder", "pose_encoder",
                            "pose_decoder"}

  # The talking-head stage loads it.
  th_dir = tmp_path / "talking_head"
  cfg = tiny_config(vox_root, overrides=[
      f"train_params.depth_checkpoint='{workdir}'"])
  summary = th.train_and_evaluate(cfg, th_dir, max_steps=1, progress=False)
  assert any("frozen, from" in n for n in summary["notes"])
  _, exported = checkpoints.load_model(th_dir / "model")
  a = exported["depth_encoder"]["params"]["encoder"]["conv1"]["kernel"]
  b = variables["depth_encoder"]["params"]["encoder"]["conv1"]["kernel"]
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_uncertainty_aware_depth_stage(tmp_path, vox_root):
  cfg = tiny_config(vox_root, trainer="depth",
                    overrides=["model_params.depth_params.uncertainty=True"])
  summary = depth_trainer.train_and_evaluate(cfg, tmp_path, max_steps=2,
                                             progress=False)
  rows = read_metrics(tmp_path)
  assert summary["step"] == 2 and len(rows) == 2
  for r in rows:
    assert math.isfinite(r["uncertainty"]) and math.isfinite(r["photometric"])
    # log U < 0 for U in (0, 1): the regulariser term is negative.
    assert r["uncertainty"] < 0
