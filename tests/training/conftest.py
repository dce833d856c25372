"""Fixtures of the trainer tests."""

import pytest


@pytest.fixture(scope="session")
def vox_root(shared_dir) -> str:
  return str(shared_dir / "data" / "vox_mini")
