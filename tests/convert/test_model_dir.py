"""Model directories: save_model / load_model round trip and their errors."""

from __future__ import annotations

import pathlib

import jax
import numpy as np
import pytest

from dagan_jax.checkpoints import load_model, save_model
from dagan_jax.config import apply_overrides, load_config
from dagan_jax.convert.cli_convert import convert_files
from dagan_jax.errors import CheckpointMismatchError, DataError
from dagan_jax.models import build

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def converted(fixture_dir):
  root = pathlib.Path(fixture_dir)
  cfg = load_config(root / "config.yaml")
  variables = convert_files(config=cfg, checkpoint=str(root / "dagan.pth.tar"),
                            depth_encoder=str(root / "depth" / "encoder.pth"),
                            depth_decoder=str(root / "depth" / "depth.pth"))
  return cfg, variables


def test_round_trip(converted, tmp_path):
  cfg, variables = converted
  path = save_model(tmp_path / "model", variables, cfg)
  assert (path / "config.yaml").is_file() and (path / "variables").is_dir()
  cfg2, loaded = load_model(path, required=build.NETWORKS)
  assert cfg2.model_params.common_params.num_kp == cfg.model_params.common_params.num_kp
  assert set(loaded) == set(build.NETWORKS)
  flat_a = jax.tree_util.tree_leaves_with_path(variables)
  flat_b = dict(jax.tree_util.tree_leaves_with_path(loaded))
  for path_, leaf in flat_a:
    np.testing.assert_array_equal(np.asarray(flat_b[path_]), leaf)
  with pytest.raises(DataError, match="exists"):
    save_model(tmp_path / "model", variables, cfg)
  save_model(tmp_path / "model", variables, cfg, overwrite=True)


def test_load_with_another_config_names_every_mismatch(converted, tmp_path):
  cfg, variables = converted
  path = save_model(tmp_path / "model", variables, cfg)
  k = int(cfg.model_params.common_params.num_kp)  # the fixture's
  c = variables["kp_detector"]["params"]["kp"]["kernel"].shape[2]
  other = apply_overrides(cfg, [f"model_params.common_params.num_kp={k + 2}"])
  with pytest.raises(CheckpointMismatchError) as e:
    load_model(path, other)
  msg = str(e.value)
  assert (f"kp_detector: params/kp/kernel has shape [7, 7, {c}, {k}], "
          f"expected [7, 7, {c}, {k + 2}]") in msg
  assert (f"generator: params/dense_motion_network/mask/bias has shape [{k + 1}], "
          f"expected [{k + 3}]") in msg


def test_missing_networks_are_named(converted, tmp_path):
  cfg, variables = converted
  only = {k: variables[k] for k in ("kp_detector", "generator")}
  path = save_model(tmp_path / "model", only, cfg)
  with pytest.raises(CheckpointMismatchError, match=r"\['depth_encoder', 'depth_decoder'\]"):
    load_model(path)
  _, loaded = load_model(path, required=("kp_detector", "generator"))
  assert set(loaded) == {"kp_detector", "generator"}


def test_not_a_model_directory(tmp_path):
  with pytest.raises(DataError, match="not a dagan-jax model directory"):
    load_model(tmp_path)


def test_a_training_workdir_is_accepted_as_a_model_directory(tmp_path):
  from dagan_jax import checkpoints
  (tmp_path / "model" / checkpoints.VARIABLES_DIR).mkdir(parents=True)
  assert checkpoints.resolve_model_dir(tmp_path) == tmp_path / "model"
  assert checkpoints.resolve_model_dir(tmp_path / "model") == tmp_path / "model"
  assert checkpoints.resolve_model_dir(tmp_path / "nope") == tmp_path / "nope"
