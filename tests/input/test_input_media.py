"""media.py: reading only the frames asked for, conversions, writing."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
from PIL import Image

from dagan_jax.errors import DataError
from dagan_jax.input import media
from input_helpers import VOX_FILE_CLIP, VOX_FOLDER_CLIP


def test_read_image_converts_grey_rgba_16bit_palette(tmp_path, caplog):
  rgb = np.random.RandomState(0).randint(0, 256, (6, 5, 3)).astype(np.uint8)
  Image.fromarray(rgb[..., 0], "L").save(tmp_path / "grey.png")
  Image.fromarray(np.dstack([rgb, np.full((6, 5), 7, np.uint8)]), "RGBA").save(
      tmp_path / "rgba.png")
  cv2.imwrite(str(tmp_path / "deep.png"), np.full((6, 5, 3), 65535, np.uint16))
  Image.fromarray(rgb).convert("P").save(tmp_path / "pal.png")
  Image.fromarray(rgb).save(tmp_path / "rgb.png")
  with caplog.at_level(logging.WARNING, logger="dagan_jax.input"):
    grey = media.read_image(tmp_path / "grey.png")
    rgba = media.read_image(tmp_path / "rgba.png")
    deep = media.read_image(tmp_path / "deep.png")
  pal = media.read_image(tmp_path / "pal.png")
  plain = media.read_image(tmp_path / "rgb.png")
  for img in (grey, rgba, deep, pal, plain):
    assert img.shape == (6, 5, 3) and img.dtype == np.float32
  np.testing.assert_allclose(grey[..., 1], rgb[..., 0] / 255.0, atol=1e-6)
  np.testing.assert_allclose(rgba, rgb / 255.0, atol=1e-6)
  np.testing.assert_allclose(plain, rgb / 255.0, atol=1e-6)
  assert deep.max() == 1.0
  text = caplog.text
  assert "greyscale" in text and "RGBA" in text and "16-bit" in text
  assert "grey.png" in text


def test_frames_of_mp4_and_folder_match_whole_decode(vox_root):
  mp4 = vox_root / "train" / VOX_FILE_CLIP
  assert media.probe_video(mp4) == (120, 25.0, (256, 256))
  video, fps = media.read_video(mp4)
  assert video.shape == (120, 256, 256, 3) and fps == 25.0
  got = media.read_frames(mp4, [70, 3, 70])
  np.testing.assert_array_equal(got, video[[70, 3, 70]])

  folder = vox_root / "train" / VOX_FOLDER_CLIP
  assert media.probe_video(folder) == (120, None, (256, 256))
  frames = media.read_frames(folder, [119, 0])
  expected = cv2.imread(str(folder / "0000119.png"))[..., ::-1] / 255.0
  np.testing.assert_allclose(frames[0], expected, atol=1e-6)


def test_seeking_to_a_late_frame_gives_the_same_frames(tmp_path, monkeypatch):
  t = np.linspace(0, 1, 150, dtype=np.float32)[:, None, None, None]
  ramp = np.linspace(0, 1, 48, dtype=np.float32)[None, None, :, None]
  frames = np.broadcast_to(0.5 * t + 0.5 * ramp, (150, 32, 48, 3)).copy()
  path = media.write_video(tmp_path / "long.mp4", frames, fps=25, gop=20)
  whole, _ = media.read_video(path)
  for wanted in ([100, 149], [48], [60, 61, 62], [0, 149], [120, 60]):
    np.testing.assert_array_equal(media.read_frames(path, wanted), whole[wanted])
  # Same answer when seeking is switched off.
  monkeypatch.setattr(media, "SEEK_MIN_FRAMES", 10**9)
  np.testing.assert_array_equal(media.read_frames(path, [100, 149]),
                                whole[[100, 149]])
  # The written video reads back close to what was written.
  assert np.abs(whole - frames).mean() < 0.02


def test_strip_gif_npy_and_png_folder_round_trips(tmp_path, vox_root):
  four = media.read_frames(vox_root / "train" / VOX_FOLDER_CLIP, [0, 1, 2, 3])
  strip = np.concatenate(list(four), axis=1)  # (256, 1024, 3)
  Image.fromarray((strip * 255 + 0.5).astype(np.uint8)).save(tmp_path / "strip.png")
  assert media.probe_video(tmp_path / "strip.png") == (4, None, (256, 256))
  np.testing.assert_allclose(media.read_frames(tmp_path / "strip.png", [2])[0],
                             four[2], atol=1e-6)
  assert media.probe_video(tmp_path / "strip.png", frame_width=128)[0] == 8

  media.write_video(tmp_path / "clip.npy", four)
  np.testing.assert_allclose(media.read_video(tmp_path / "clip.npy")[0], four)

  media.write_video(tmp_path / "frames", four)
  assert sorted(p.name for p in (tmp_path / "frames").iterdir())[0] == "0000000.png"
  np.testing.assert_allclose(media.read_video(tmp_path / "frames")[0], four,
                             atol=1e-6)

  media.write_video(tmp_path / "clip.gif", four, fps=10)
  n, fps, hw = media.probe_video(tmp_path / "clip.gif")
  assert (n, hw) == (4, (256, 256)) and fps == pytest.approx(10.0)
  assert np.abs(media.read_frames(tmp_path / "clip.gif", [3])[0] - four[3]).mean() < 0.05


def test_write_mp4_odd_size(tmp_path):
  frames = np.full((3, 15, 17, 3), 0.5, np.float32)
  media.write_video(tmp_path / "odd.mp4", frames, fps=25)
  got, fps = media.read_video(tmp_path / "odd.mp4")
  assert got.shape == (3, 15, 17, 3) and fps == 25.0
  assert np.abs(got - 0.5).max() < 0.02


def test_natural_order_of_unpadded_frame_names(tmp_path):
  for i in (1, 2, 10):
    cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((4, 4, 3), i, np.uint8))
  (tmp_path / "notes.txt").write_text("not a frame")
  assert media.list_frame_files(tmp_path) == ["1.png", "2.png", "10.png"]
  assert media.read_frames(tmp_path, [2])[0, 0, 0, 0] == pytest.approx(10 / 255)


def test_errors_name_the_file(tmp_path, vox_root):
  with pytest.raises(DataError, match="no such file"):
    media.probe_video(tmp_path / "missing.mp4")
  junk = tmp_path / "junk.mp4"
  junk.write_bytes(b"this is not a video" * 10)
  with pytest.raises(DataError, match="junk.mp4"):
    media.probe_video(junk)
  with pytest.raises(DataError, match="unknown clip type"):
    (tmp_path / "clip.xyz").write_bytes(b"x")
    media.read_video(tmp_path / "clip.xyz")
  mp4 = vox_root / "train" / VOX_FILE_CLIP
  with pytest.raises(DataError, match=r"only 120 decodable frames.*asked for"):
    media.read_frames(mp4, [5, 120])
  good = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
  (tmp_path / "cut.jpg").write_bytes(good[:-40])
  with pytest.raises(DataError, match="cut.jpg: truncated JPEG"):
    media.read_image(tmp_path / "cut.jpg")
  (tmp_path / "empty.png").write_bytes(b"")
  with pytest.raises(DataError, match="empty.png: empty image"):
    media.read_image(tmp_path / "empty.png")
  (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
  with pytest.raises(DataError, match="bad.png: cannot decode"):
    media.read_image(tmp_path / "bad.png")
