"""The converter is strict and says exactly what is wrong."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from dagan_jax import cli
from dagan_jax.config import apply_overrides, load_config
from dagan_jax.convert import dagan
from dagan_jax.convert.torch_to_flax import (anti_alias_kernel,
                                             expected_torch_keys,
                                             flax_module_to_torch,
                                             load_torch_file, strip_prefix,
                                             torch_module_to_flax)
from dagan_jax.errors import CheckpointMismatchError
from dagan_jax.models import build

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def small(fixture_dir):
  root = pathlib.Path(fixture_dir)
  cfg = load_config(root / "config.yaml")
  ckpt = load_torch_file(str(root / "dagan.pth.tar"))
  return root, cfg, ckpt


def _fake_state_dict(models, name, rng=None):
  """A state_dict with exactly the keys/shapes a network needs (random)."""
  rng = rng or np.random.default_rng(0)
  abstract = build.abstract_variables(models, (name,))[name]
  return {k: rng.normal(size=leaf.torch_shape).astype(np.float32)
          for k, leaf in expected_torch_keys(abstract).items()}


def test_module_path_rules_round_trip(small):
  _, _, ckpt = small
  for net in ("generator", "kp_detector", "discriminator"):
    for key in strip_prefix(ckpt[net]):
      module = key.rsplit(".", 1)[0]
      assert flax_module_to_torch(torch_module_to_flax(module)) == module
  assert torch_module_to_flax("bottleneck.r3.norm1") == ("bottleneck_r3", "norm1")
  assert torch_module_to_flax("discs.0-5.down_blocks.1.conv") == (
      "discs_0-5", "down_blocks_1", "conv")
  assert flax_module_to_torch(("decoder", "G_middle_0", "conv_0")) == \
      "decoder.G_middle_0.conv_0"
  assert flax_module_to_torch(("decoder_10", "conv")) == "decoder.10.conv"


def test_fixture_converts_cleanly_and_drops_only_known_keys(small):
  _, cfg, ckpt = small
  models = build.build_models(cfg)
  variables, reports = dagan.convert_dagan_checkpoint(ckpt, models)
  dropped = [k for r in reports for k in r.dropped]
  assert all(k.endswith("num_batches_tracked") or k.endswith("down.weight")
             for k in dropped), dropped
  assert "down.weight" in dropped and "dense_motion_network.down.weight" in dropped
  assert set(variables) == {"kp_detector", "generator", "discriminator"}
  k = variables["kp_detector"]["params"]["kp"]["kernel"]
  w = strip_prefix(ckpt["kp_detector"])["kp.weight"]
  np.testing.assert_array_equal(k, w.transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(
      variables["generator"]["batch_stats"]["first"]["norm"]["var"],
      strip_prefix(ckpt["generator"])["first.norm.running_var"])


def test_missing_unexpected_and_misshaped_keys_are_all_named(small):
  _, cfg, ckpt = small
  models = build.build_models(cfg)
  bad = dict(ckpt)
  kp = dict(bad["kp_detector"])
  bias_shape = list(np.shape(kp["module.jacobian.bias"]))
  var_key = "module.predictor.decoder.up_blocks.0.norm.running_var"
  var_shape = list(np.shape(kp[var_key]))
  del kp["module.jacobian.bias"]
  kp["module.extra_head.weight"] = np.zeros((2, 3, 1, 1), np.float32)
  kp["module.predictor.decoder.up_blocks.0.norm.running_var"] = np.ones(7, np.float32)
  bad["kp_detector"] = kp
  with pytest.raises(CheckpointMismatchError) as e:
    dagan.convert_dagan_checkpoint(bad, models, source="bad.pth.tar")
  msg = str(e.value)
  assert "kp_detector (bad.pth.tar)" in msg
  assert "missing keys (1)" in msg and f"jacobian.bias: {bias_shape}" in msg
  assert "unexpected keys (1)" in msg and "extra_head.weight: [2, 3, 1, 1]" in msg
  assert "mis-shaped keys (1)" in msg
  assert ("predictor.decoder.up_blocks.0.norm.running_var: checkpoint [7], "
          f"expected {var_shape}") in msg


def test_wrong_number_of_keypoints_is_diagnosed(small):
  _, cfg, ckpt = small
  k = int(cfg.model_params.common_params.num_kp)  # the fixture's
  c = np.shape(ckpt["kp_detector"]["module.kp.weight"])[1]
  other = apply_overrides(cfg, [f"model_params.common_params.num_kp={k + 5}"])
  with pytest.raises(CheckpointMismatchError) as e:
    dagan.convert_dagan_checkpoint(ckpt, build.build_models(other))
  msg = str(e.value)
  assert f"predicts {k} keypoints but model_params.common_params.num_kp is {k + 5}" in msg
  assert f"trained with {k} keypoints" in msg
  assert f"kp.weight: checkpoint [{k}, {c}, 7, 7], expected [{k + 5}, {c}, 7, 7]" in msg


def test_spade_checkpoint_for_plain_generator_and_vice_versa(small):
  _, cfg, ckpt = small
  spade_cfg = apply_overrides(
      cfg, ["model_params.generator_type=SPADEDepthAwareGenerator"])
  spade_models = build.build_models(spade_cfg)
  # Plain weights given for a SPADE config.
  with pytest.raises(CheckpointMismatchError) as e:
    dagan.convert_dagan_checkpoint(ckpt, spade_models,
                                   generator_type="SPADEDepthAwareGenerator")
  msg = str(e.value)
  assert "this is a DepthAwareGenerator checkpoint" in msg
  assert "model_params.generator_type=DepthAwareGenerator" in msg
  assert "decoder.G_middle_0.conv_0.weight_orig" in msg  # named as missing
  assert "bottleneck.r0.conv1.weight" in msg  # named as unexpected
  # SPADE weights given for the plain config.
  spade_sd = _fake_state_dict(spade_models, "generator")
  spade_sd["dense_motion_network.down.weight"] = anti_alias_kernel(3, 0.25)
  bad = {**ckpt, "generator": {"module." + k: v for k, v in spade_sd.items()}}
  with pytest.raises(CheckpointMismatchError) as e:
    dagan.convert_dagan_checkpoint(bad, build.build_models(cfg))
  msg = str(e.value)
  assert "this is a SPADEDepthAwareGenerator checkpoint" in msg
  assert "set model_params.generator_type=SPADEDepthAwareGenerator" in msg
  # ... and the same SPADE weights convert under the SPADE config.
  variables, _ = dagan.convert_dagan_checkpoint(bad, spade_models)
  assert "weight_u" not in str(variables)
  u = variables["generator"]["batch_stats"]["decoder"]["up_0"]["conv_s"]["u"]
  assert u.shape == spade_sd["decoder.up_0.conv_s.weight_u"].shape


def test_resnet50_depth_weights_with_18_layer_config(small):
  _, cfg, _ = small
  cfg50 = apply_overrides(cfg, ["model_params.depth_params.num_layers=50"])
  m50 = build.build_models(cfg50)
  enc50 = _fake_state_dict(m50, "depth_encoder")
  enc50.update({"encoder.fc.weight": np.zeros((1000, 2048), np.float32),
                "encoder.fc.bias": np.zeros(1000, np.float32),
                "height": 256, "width": 256, "use_stereo": False})
  dec50 = _fake_state_dict(m50, "depth_decoder")
  with pytest.raises(CheckpointMismatchError) as e:
    dagan.convert_depth(enc50, dec50, build.build_models(cfg), num_layers=18)
  msg = str(e.value)
  assert "this depth encoder is a ResNet-50 but model_params.depth_params." \
         "num_layers is 18" in msg
  assert "set model_params.depth_params.num_layers=50" in msg
  assert "this depth decoder belongs to a ResNet-50 encoder" in msg
  assert "encoder.layer1.0.conv3.weight" in msg  # unexpected, named
  # The same files are fine with num_layers=50.
  variables, _ = dagan.convert_depth(enc50, dec50, m50, num_layers=50)
  assert variables["depth_encoder"]["params"]["encoder"]["layer4_2"]["conv3"][
      "kernel"].shape == (1, 1, 512, 2048)


def test_resnet18_depth_weights_with_50_layer_config(small):
  root, cfg, _ = small
  cfg50 = apply_overrides(cfg, ["model_params.depth_params.num_layers=50"])
  enc = load_torch_file(str(root / "depth" / "encoder.pth"))
  with pytest.raises(CheckpointMismatchError) as e:
    dagan.convert_depth(enc, None, build.build_models(cfg50), num_layers=50)
  assert "this depth encoder is a ResNet-18 but model_params.depth_params." \
         "num_layers is 50" in str(e.value)


def test_anti_alias_buffer_of_another_scale_is_an_error(small):
  _, cfg, ckpt = small
  bad = {**ckpt, "kp_detector": {**ckpt["kp_detector"],
                                 "module.down.weight": anti_alias_kernel(4, 0.5)}}
  with pytest.raises(CheckpointMismatchError) as e:
    dagan.convert_dagan_checkpoint(bad, build.build_models(cfg))
  assert "down.weight: checkpoint [4, 1, 5, 5], expected [4, 1, 13, 13]" in str(e.value)


def test_cli_reports_mismatch_with_exit_code_2(small, tmp_path, capsys):
  root, cfg, _ = small
  other = int(cfg.model_params.common_params.num_kp) + 5
  rc = cli.main(["convert", "--checkpoint", str(root / "dagan.pth.tar"),
                 "--config", str(root / "config.yaml"), "--out", str(tmp_path / "m"),
                 "--set", f"model_params.common_params.num_kp={other}"])
  assert rc == 2
  err = capsys.readouterr().err
  assert "dagan-jax convert: error:" in err and f"num_kp is {other}" in err
  assert not (tmp_path / "m" / "variables").exists()


def test_cli_help_documents_the_command(capsys):
  with pytest.raises(SystemExit):
    cli.main(["convert", "--help"])
  out = capsys.readouterr().out
  for flag in ("--checkpoint", "--depth-encoder", "--depth-decoder", "--config",
               "--out", "--set"):
    assert flag in out


def test_vgg19_conversion(tmp_path):
  layers = []
  cin = 3
  for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
            512, 512, 512, 512, "M", 512, 512, 512, 512, "M"):
    if v == "M":
      layers.append(torch.nn.MaxPool2d(2))
    else:
      layers += [torch.nn.Conv2d(cin, v, 3, padding=1), torch.nn.ReLU()]
      cin = v
  features = torch.nn.Sequential(*layers)
  sd = {f"features.{k}": v.numpy() for k, v in features.state_dict().items()}
  sd["classifier.0.weight"] = np.zeros((4, 4), np.float32)
  params = dagan.convert_vgg19(sd)
  assert sorted(params, key=lambda n: int(n.split("_")[1]))[-1] == "features_34"
  assert params["features_5"]["kernel"].shape == (3, 3, 64, 128)
  np.testing.assert_array_equal(params["features_0"]["kernel"],
                                sd["features.0.weight"].transpose(2, 3, 1, 0))
  del sd["features.7.bias"]
  sd["features.2.weight"] = np.zeros((64, 3, 3, 3), np.float32)
  with pytest.raises(CheckpointMismatchError) as e:
    dagan.convert_vgg19(sd)
  msg = str(e.value)
  assert "features.7.bias: expected [128]" in msg
  assert "features.2.weight: checkpoint [64, 3, 3, 3], expected [64, 64, 3, 3]" in msg
