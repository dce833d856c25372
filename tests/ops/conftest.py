"""Shared fixture for the ops tests: the official DaGAN parity arrays."""

import numpy as np
import pytest


@pytest.fixture(scope='session')
def fixture_arrays(fixture_dir):
  """All arrays of ``fixture.npz`` (NCHW, as torch wrote them), by name."""
  path = fixture_dir / 'fixture.npz'
  if not path.is_file():
    pytest.fail(f'parity fixture not found at {path}')
  with np.load(path) as data:
    return {name: data[name] for name in data.files}
