"""Fixtures of the inference tests: one tiny random model directory."""

import pytest

from inference_helpers import save_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
  return save_tiny_model(tmp_path_factory.mktemp("tiny_model") / "model")
