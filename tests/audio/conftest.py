"""Fixture directories of the audio tests (overridable, as the parity tests
of the networks that consume these features)."""

import os
import pathlib

import numpy as np
import pytest


def _fixture(shared_dir: pathlib.Path, env: str, name: str):
  path = pathlib.Path(os.environ.get(env) or shared_dir / "fixtures" / name)
  npz = path / "fixture.npz"
  if not npz.is_file():
    pytest.fail(f"{npz} not found (set {env})")
  return np.load(npz)


@pytest.fixture(scope="session")
def a2h_npz(shared_dir):
  return _fixture(shared_dir, "DAGAN_A2H_FIXTURE", "audio2head_small")


@pytest.fixture(scope="session")
def iplap_npz(shared_dir):
  return _fixture(shared_dir, "DAGAN_IPLAP_FIXTURE", "ip_lap_small")
