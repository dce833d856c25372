"""`dagan-jax data check`: summary, every bad file by name, exit status."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
from PIL import Image

from dagan_jax import cli
from input_helpers import VOX_FILE_CLIP, VOX_FOLDER_CLIP, make_folder_clip


def test_check_good_datasets_and_contact_sheet(vox_root, hdtf_root, tmp_path, capsys):
  sheet = tmp_path / "sheet.png"
  rc = cli.main(["data", "check", "--root", str(vox_root), "--layout", "vox",
                 "--cache-dir", str(tmp_path / "c"), "--sheet", str(sheet),
                 "--sheet-pairs", "4"])
  out = capsys.readouterr().out
  assert rc == 0, out
  assert "train: 12 clips, 8 persons, 1398 frames [1 folder, 11 video]" in out
  assert "test: 2 clips, 2 persons, 200 frames" in out
  assert "OK: no bad files" in out
  img = np.asarray(Image.open(sheet))
  assert img.shape == (2 * (128 + 2), 56 + 4 * 130, 3)
  assert img[:, 56:].std() > 20  # Faces, not a blank canvas.

  rc = cli.main(["data", "check", "--root", str(hdtf_root), "--layout", "hdtf",
                 "--split", "test", "--cache-dir", str(tmp_path / "c")])
  out = capsys.readouterr().out
  assert rc == 0 and "test: 1 clips, 1 persons, 32 frames" in out
  assert "train:" not in out


def test_check_lists_every_bad_file(vox_root, tmp_path, capsys):
  root = tmp_path / "data"
  train = root / "train"
  train.mkdir(parents=True)
  shutil.copy(vox_root / "train" / VOX_FILE_CLIP, train / VOX_FILE_CLIP)
  shutil.copytree(vox_root / "train" / VOX_FOLDER_CLIP, train / VOX_FOLDER_CLIP)
  (train / "id9#corrupt#0#1.mp4").write_bytes(b"not an mp4 at all")
  data = (vox_root / "train" / VOX_FILE_CLIP).read_bytes()
  (train / "id9#cut#0#120.mp4").write_bytes(data[: len(data) // 2])
  make_folder_clip(train / "id8#small#0#3.mp4", [1, 2, 3], size=(64, 64))
  make_folder_clip(train / "id8#single#0#1.mp4", [1], size=(256, 256))
  grey = train / "id7#grey#0#2.mp4"
  grey.mkdir()
  for i in range(2):
    cv2.imwrite(str(grey / f"{i:07d}.png"), np.zeros((256, 256), np.uint8))
  # A bad frame in the middle of a good folder: found by the sampled decode.
  odd = train / "id6#oddframe#0#120.mp4"
  shutil.copytree(vox_root / "train" / VOX_FOLDER_CLIP, odd)
  (odd / "0000119.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
  (root / "test").mkdir()

  rc = cli.main(["data", "check", "--root", str(root), "--layout", "vox",
                 "--cache-dir", str(tmp_path / "c"), "--num-sample-frames", "2",
                 "--sheet", str(tmp_path / "s.png")])
  out = capsys.readouterr().out
  assert rc == 1, out
  assert "train: 2 clips, 1 persons, 240 frames" in out
  expected = {
      "id9#corrupt#0#1.mp4": "cannot open video",
      "id9#cut#0#120.mp4": "cannot open video",
      "id8#small#0#3.mp4": "frames are 64x64; dataset_params.frame_shape asks for 256x256",
      "id8#single#0#1.mp4": "has 1 frame; a record needs at least 2",
      "id7#grey#0#2.mp4": "greyscale (1 channel)",
      "id6#oddframe#0#120.mp4/0000119.png": "cannot decode image",
      str(root / "test"): "is empty",
  }
  lines = out.splitlines()
  for name, why in expected.items():
    assert any(name in ln and why in ln for ln in lines), (name, out)
  assert "FAILED: 7 bad file(s)" in out
  assert "contact sheet of 8 train pairs" in out  # Drawn from the good clips.

  assert cli.main(["data", "check", "--root", str(tmp_path / "absent")]) == 2
  assert "does not exist" in capsys.readouterr().err
