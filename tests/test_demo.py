"""``dagan-jax demo`` end to end on the shipped sample, with a toy model and
two training steps (the real demo runs configs/smoke.py for longer)."""

import json

import numpy as np
import pytest
from PIL import Image

from dagan_jax import cli, config as config_lib, demo
from dagan_jax.input import media


def _toy_config_file(path):
  """The talking-head config at toy widths and 32x32 frames, as YAML."""
  d = config_lib.toy_model(config_lib.talking_head_config(), frame=32)
  d["name"] = "toy_demo"
  # No perceptual loss: the VGG's compilation would double this test's time
  # (the trainer's own tests cover it); GAN, feature matching and
  # equivariance still train the toy model.
  d["train_params"].update({"batch_size": 4, "num_repeats": 2,
                            "eval_num_videos": 2, "eval_num_frames": 2})
  d["train_params"]["loss_weights"]["perceptual"] = [0, 0, 0, 0, 0]
  path.write_text(config_lib.to_yaml(config_lib.from_dict(d)))
  return path


def test_the_sample_ships_with_its_licence():
  sample = demo.repo_root() / "data" / "sample"
  clips = sorted(p.relative_to(sample).as_posix() for p in sample.glob("*/*.mp4"))
  assert demo.SAMPLE_SOURCE in clips and demo.SAMPLE_DRIVING in clips
  assert {c.split("/")[0] for c in clips} == {"train", "test"}
  assert sum((sample / c).stat().st_size for c in clips) < 1_000_000
  assert "MIT" in (sample / "LICENSE.md").read_text()
  for c in clips:
    assert media.probe_video(sample / c) == (64, 25.0, (64, 64))


@pytest.mark.slow
def test_demo_trains_animates_evaluates_and_reuses_its_checkpoint(tmp_path, capsys):
  cfg = _toy_config_file(tmp_path / "toy.yaml")
  out = tmp_path / "demo_out"
  rc = cli.main(["demo", "--out", str(out), "--steps", "2", "--config", str(cfg),
                 "--eval-frames", "4", "--batch-size", "4", "--no-progress"])
  printed = capsys.readouterr()
  assert rc == 0, printed.err
  for stage in ("[1/4] training", "[2/4] animating", "[3/4] evaluating",
                "[4/4] writing"):
    assert stage in printed.err
  metrics = json.loads((out / "metrics.json").read_text())
  tr = metrics["training"]
  assert tr["steps"] == 2
  held = tr["held_out_reconstruction"]
  for when in ("before_training", "after_training"):
    assert set(held[when]) == {"reconstruction_l1", "copy_source_l1"}
  assert "RANDOM weights" in " ".join(tr["notes"])
  ev = metrics["evaluation"]
  assert ev["protocol"] == "reconstruction" and ev["settings"]["motion"] == "absolute"
  assert ev["metrics"] == ["l1", "psnr", "ssim", "lpips_alex"]
  assert [e["num_frames"] for e in ev["per_video"].values()] == [4, 4]
  an = metrics["animation"]
  assert an["frames"] == 64 and an["frame_size"] == [32, 32]
  assert media.probe_video(out / "animation.mp4") == (64, 25.0, (32, 32))
  assert media.probe_video(out / "animation_side_by_side.mp4")[0] == 64
  summary = np.asarray(Image.open(out / "summary.png"))
  assert summary.shape[0] > 3 * 128 and summary.shape[1] > 6 * 128
  for name in ("animation.mp4", "summary.png", "metrics.json"):
    assert str(out / name) in printed.out
  # --checkpoint skips training (a training workdir is accepted).
  out2 = tmp_path / "again"
  rc = cli.main(["demo", "--out", str(out2), "--checkpoint",
                 str(out / "train" / "talking_head"), "--eval-frames", "4",
                 "--batch-size", "4", "--no-progress"])
  printed = capsys.readouterr()
  assert rc == 0, printed.err
  assert "[1/3] animating" in printed.err and "training" not in printed.err
  again = json.loads((out2 / "metrics.json").read_text())
  assert again["training"] is None and again["animation"]["frames"] == 64


def test_demo_names_what_is_missing(tmp_path, capsys):
  rc = cli.main(["demo", "--out", str(tmp_path / "o"), "--data",
                 str(tmp_path / "nowhere"), "--no-progress"])
  assert rc == 2
  assert "sample data not found: " in capsys.readouterr().err
