"""Fixtures for the input-pipeline tests: shared clips and synthetic ones."""

from __future__ import annotations

import pathlib
import shutil

import pytest

from input_helpers import VOX_FILE_CLIP, VOX_FOLDER_CLIP, VOX_OTHER_CLIP


@pytest.fixture(scope="session")
def vox_root(shared_dir) -> pathlib.Path:
  return shared_dir / "data" / "vox_mini"


@pytest.fixture(scope="session")
def hdtf_root(shared_dir) -> pathlib.Path:
  return shared_dir / "data" / "hdtf_mini"


@pytest.fixture(scope="session")
def small_vox(tmp_path_factory, vox_root) -> pathlib.Path:
  """A copy of three vox_mini train clips (two persons; a frame folder and
  two mp4 files) and the two test clips."""
  root = tmp_path_factory.mktemp("small_vox")
  (root / "train").mkdir()
  for name in (VOX_FOLDER_CLIP, VOX_FILE_CLIP, VOX_OTHER_CLIP):
    src = vox_root / "train" / name
    if src.is_dir():
      shutil.copytree(src, root / "train" / name)
    else:
      shutil.copy(src, root / "train" / name)
  shutil.copytree(vox_root / "test", root / "test")
  return root
