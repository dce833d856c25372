import json

import pytest
import yaml

from dagan_jax import config as config_lib
from dagan_jax.errors import ConfigError


def test_default_config_is_official_vox256_with_15_kp():
  cfg = config_lib.default_config()
  assert cfg.model_params.common_params.num_kp == 15
  assert cfg.model_params.generator_params.num_bottleneck_blocks == 6
  assert cfg.model_params.depth_params.num_layers == 18
  assert cfg.train_params.scales == [1, 0.5, 0.25, 0.125]


def test_official_yaml_loads_with_extra_defaults(fixture_dir):
  cfg = config_lib.load_config(fixture_dir / "config.yaml")
  meta = json.loads((fixture_dir / "meta.json").read_text())
  assert cfg.model_params.common_params.num_kp == meta["kp_num"]
  assert cfg.model_params.generator_type == "DepthAwareGenerator"
  assert cfg.model_params.kp_detector_params.use_depth is True
  # Our trainer's keys take the schema's defaults (one place for them).
  schema = config_lib.talking_head_train_params()
  for key, value in schema.items():
    assert cfg.train_params[key] == value, key
  # The official file's own values win.
  official = yaml.safe_load((fixture_dir / "config.yaml").read_text())["train_params"]
  assert cfg.train_params.num_repeats == official["num_repeats"]


def test_a_depth_config_without_our_keys_takes_the_depth_schema(tmp_path):
  d = config_lib.depth_config()
  for key in ("log_every", "ssim_alpha", "automask"):
    del d["train_params"][key]
  cfg = config_lib.from_dict(d)
  schema = config_lib.depth_train_params()
  for key in ("log_every", "ssim_alpha", "automask"):
    assert cfg.train_params[key] == schema[key], key


def test_overrides_parse_types_and_reject_unknown_keys(fixture_dir):
  cfg = config_lib.load_config(
      fixture_dir / "config.yaml",
      ["--config.train_params.batch_size=8", "train_params.lr_generator=1e-3",
       "model_params.depth_params.num_layers=50"])
  assert cfg.train_params.batch_size == 8
  assert cfg.train_params.lr_generator == pytest.approx(1e-3)
  assert cfg.model_params.depth_params.num_layers == 50
  with pytest.raises(ConfigError, match="no key 'batch_sise'"):
    config_lib.apply_overrides(cfg, ["train_params.batch_sise=2"])


def test_inconsistent_model_is_named():
  cfg = config_lib.default_config()
  with pytest.raises(ConfigError, match="generator_type"):
    config_lib.apply_overrides(cfg, ["model_params.model='daganpp'"])
  with pytest.raises(ConfigError, match="num_layers"):
    config_lib.apply_overrides(cfg, ["model_params.depth_params.num_layers=34"])


def test_missing_config_file_is_named(tmp_path):
  with pytest.raises(ConfigError, match="not found"):
    config_lib.load_config(tmp_path / "nope.py")
