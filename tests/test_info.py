"""`dagan-jax info`: parameter counts and the compiled cost of a training step."""

import json
import sys

import pytest

sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__file__), "training"))

from train_helpers import tiny_config  # noqa: E402
from dagan_jax import cli, cli_info  # noqa: E402
from dagan_jax import config as config_lib  # noqa: E402


@pytest.mark.slow
def test_info_counts_and_step_memory(tmp_path, shared_dir, capsys):
  # Without the perceptual and equivariance terms the step (compiled twice
  # here) compiles in a fraction of the time; what is checked holds for any
  # step.
  cfg = tiny_config(str(shared_dir / "data" / "vox_mini"), overrides=[
      "train_params.loss_weights.perceptual=[0,0,0,0,0]",
      "train_params.loss_weights.equivariance_value=0",
      "train_params.loss_weights.equivariance_jacobian=0"])
  path = tmp_path / "tiny.yaml"
  path.write_text(config_lib.to_yaml(cfg))
  out_json = tmp_path / "info.json"
  assert cli.main(["info", "--config", str(path), "--memory",
                   "--batch-per-device", "2", "--json", str(out_json)]) == 0
  text = capsys.readouterr().out
  assert "kp_detector" in text and "peak" in text and "GFLOP" in text
  info = json.loads(out_json.read_text())
  step = info["train_step"]
  assert step["batch_per_device"] == 2 and step["flops"] > 0
  assert step["peak"] >= step["temp"] > 0
  # Temporaries grow with the batch; arguments (weights, optimiser) do not.
  one = cli_info.collect(cfg, memory=True, batch_per_device=1)["train_step"]
  assert step["temp"] > one["temp"]
  assert abs(step["argument"] - one["argument"]) < 0.05 * one["argument"]


def test_info_depth_config(shared_dir):
  cfg = tiny_config(str(shared_dir / "data" / "vox_mini"), trainer="depth")
  info = cli_info.collect(cfg)
  assert {"pose_encoder", "pose_decoder"} <= set(info["param_counts"])
