"""``dagan-jax animate`` end to end: formats, conversions, bad input."""

import logging

import numpy as np
import pytest
from PIL import Image

from dagan_jax import cli, config as config_lib
from dagan_jax.input import media

from inference_helpers import face_clip, tiny_dict


def _u8(x):
  return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  d = tmp_path_factory.mktemp("animate_inputs")
  # An RGBA source of another size and aspect, a greyscale one, and a 12 fps
  # driving video of 40x40 frames.
  rgb = _u8(face_clip(1, 1, size=48)[0][:, 4:44])
  alpha = np.full(rgb.shape[:2] + (1,), 200, np.uint8)
  Image.fromarray(np.concatenate([rgb, alpha], -1), "RGBA").save(d / "rgba.png")
  Image.fromarray(rgb[..., 0], "L").save(d / "grey.png")
  media.write_video(d / "driving.mp4", _u8(face_clip(4, 6, size=40)), fps=12)
  return d


def _animate(*args):
  return cli.main(["animate", "--no-progress", *map(str, args)])


def test_rgba_source_mp4_keeps_fps_with_side_by_side(tiny_model_dir, inputs,
                                                     tmp_path, caplog, capsys):
  out = tmp_path / "result.mp4"
  with caplog.at_level(logging.WARNING):
    rc = _animate("--checkpoint", tiny_model_dir, "--source", inputs / "rgba.png",
                  "--driving", inputs / "driving.mp4", "--out", out, "--side-by-side",
                  "--batch-size", "4")
  assert rc == 0
  assert "RGBA image converted to RGB (alpha dropped)" in caplog.text
  assert "frames are 48x40; resized to the model's 32x32 (aspect ratio changed" in caplog.text
  assert "frames are 40x40; resized to the model's 32x32" in caplog.text
  assert media.probe_video(out) == (6, 12.0, (32, 32))
  # source | driving + keypoints | depth | result, panels enlarged to 128.
  assert media.probe_video(tmp_path / "result_side_by_side.mp4") == (6, 12.0, (128, 512))
  assert "frames/s" in capsys.readouterr().out


def test_greyscale_source_absolute_best_frame_npy_from_a_workdir(
    tiny_model_dir, inputs, tmp_path, caplog, capsys):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "model").symlink_to(tiny_model_dir, target_is_directory=True)
  with caplog.at_level(logging.WARNING):
    rc = _animate("--checkpoint", workdir, "--source", inputs / "grey.png",
                  "--driving", inputs / "driving.mp4", "--out", tmp_path / "r.npy",
                  "--find-best-frame", "--batch-size", "4")
  assert rc == 0 and "greyscale image converted to RGB" in caplog.text
  assert "initial driving frame:" in capsys.readouterr().err
  arr = np.load(tmp_path / "r.npy")
  assert arr.shape == (6, 32, 32, 3) and arr.dtype == np.float32
  # Absolute motion into a PNG folder, from a fixed start frame (ignored by
  # absolute motion, so the frames equal a plain absolute run).
  assert _animate("--checkpoint", tiny_model_dir, "--source", inputs / "grey.png",
                  "--driving", inputs / "driving.mp4", "--out", tmp_path / "png",
                  "--absolute", "--best-frame", "2", "--batch-size", "4") == 0
  assert _animate("--checkpoint", tiny_model_dir, "--source", inputs / "grey.png",
                  "--driving", inputs / "driving.mp4", "--out", tmp_path / "a.npy",
                  "--absolute", "--batch-size", "4") == 0
  pngs = sorted((tmp_path / "png").iterdir())
  assert len(pngs) == 6
  got = np.stack([media.read_image_native(p) for p in pngs])
  np.testing.assert_array_equal(got, _u8(np.load(tmp_path / "a.npy")))


def _bad_cases(tmp_path, inputs, model):
  corrupt = tmp_path / "corrupt.mp4"
  corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 20)
  data = (inputs / "driving.mp4").read_bytes()
  truncated = tmp_path / "truncated.mp4"
  truncated.write_bytes(data[: len(data) // 3])
  empty = tmp_path / "no_frames"
  empty.mkdir()
  (empty / "notes.txt").write_text("no frames here")
  mismatch = tmp_path / "other.yaml"
  d = tiny_dict()
  d["model_params"]["common_params"]["num_kp"] = 6
  mismatch.write_text(config_lib.to_yaml(config_lib.from_dict(d)))
  src, drv = inputs / "rgba.png", inputs / "driving.mp4"
  return {
      "missing source": (["--source", tmp_path / "nope.png", "--driving", drv],
                         "no such file or folder: .*nope.png"),
      "corrupt driving": (["--source", src, "--driving", corrupt],
                          "corrupt.mp4: cannot open video"),
      "truncated driving": (["--source", src, "--driving", truncated],
                            "truncated.mp4: (cannot open video|decoding failed|"
                            "video has no decodable frames)"),
      "no frames": (["--source", src, "--driving", empty],
                    "no_frames: frame folder holds no image files"),
      "start frame past the end": (["--source", src, "--driving", drv,
                                    "--best-frame", "6"],
                                   r"best frame 6 is outside the driving video "
                                   r".*driving.mp4 \(frames 0..5\)"),
      "config mismatch": (["--source", src, "--driving", drv, "--config", mismatch],
                          "does not match the networks built from the config"),
      "no checkpoint": (["--source", src, "--driving", drv, "--checkpoint",
                         tmp_path / "missing_model"], "missing_model does not exist"),
      "not a model": (["--source", src, "--driving", drv, "--checkpoint", empty],
                      "no_frames has no variables/: not a dagan-jax model directory"),
  }


def test_bad_inputs_are_named_errors(tiny_model_dir, inputs, tmp_path, capsys):
  import re
  for name, (args, pattern) in _bad_cases(tmp_path, inputs, tiny_model_dir).items():
    if "--checkpoint" not in args:
      args = ["--checkpoint", tiny_model_dir] + args
    rc = _animate(*args, "--out", tmp_path / f"{name.replace(' ', '_')}.mp4")
    err = capsys.readouterr().err
    assert rc == 2, (name, err)
    assert err.startswith("dagan-jax animate: error: "), (name, err)
    assert re.search(pattern, err), (name, err)
    assert "Traceback" not in err
