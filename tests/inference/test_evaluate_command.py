"""``dagan-jax evaluate`` end to end on a tiny checkpoint and two short clips,
scored again here with numpy / scikit-image."""

import json

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from dagan_jax import checkpoints, cli
from dagan_jax.inference.animate import Animator
from dagan_jax.input import media

from inference_helpers import face_clip

CLIP_A = "id00001#a#000000#000005.mp4"   # an mp4 of 40x40 frames (resized)
CLIP_B = "id00002#b#000000#000004.mp4"   # a folder of 32x32 PNG frames


def _u8(x):
  return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  r = tmp_path_factory.mktemp("eval_root")
  (r / "test" / CLIP_B).mkdir(parents=True)
  media.write_video(r / "test" / CLIP_A, _u8(face_clip(8, 5, size=40)), fps=25)
  for i, f in enumerate(_u8(face_clip(9, 4))):
    Image.fromarray(f).save(r / "test" / CLIP_B / f"{i:07d}.png")
  (r / "pairs.csv").write_text(
      "source,driving,frame\n"
      f"test/{CLIP_A}/0000001.png,test/{CLIP_A}/0000003.png\n"
      f"test/{CLIP_B}/0000000.png,test/{CLIP_A}\n")
  return r


@pytest.fixture(scope="module")
def animator(tiny_model_dir):
  config, variables = checkpoints.load_model(tiny_model_dir)
  return Animator(config, variables, batch_size=4)


def _frames(root, clip):
  """Ground truth read and resized here (OpenCV area, as training does)."""
  video, _ = media.read_video(root / "test" / clip)
  return np.stack([cv2.resize(f, (32, 32), interpolation=cv2.INTER_AREA)
                   if f.shape[0] != 32 else f for f in video])


def _scores(real, fake):
  l1 = np.abs(real - fake).mean(axis=(1, 2, 3))
  psnr = [peak_signal_noise_ratio(r, f, data_range=1.0) for r, f in zip(real, fake)]
  ssim = [structural_similarity(r, f, data_range=1.0, channel_axis=-1,
                                gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False)
          for r, f in zip(real, fake)]
  return {"l1": l1.mean(), "psnr": np.mean(psnr), "ssim": np.mean(ssim)}


def test_reconstruction(tiny_model_dir, root, animator, tmp_path, capsys):
  out = tmp_path / "report.json"
  rc = cli.main(["evaluate", "--checkpoint", str(tiny_model_dir), "--data", str(root),
                 "--protocol", "reconstruction", "--metrics", "l1,psnr,ssim,lpips_alex,akd",
                 "--chunk-size", "4", "--batch-size", "4", "--out", str(out),
                 "--no-progress"])
  text = capsys.readouterr().out
  assert rc == 0
  report = json.loads(out.read_text())
  assert report["settings"]["motion"] == "absolute"
  assert report["metrics"] == ["l1", "psnr", "ssim", "lpips_alex"]
  assert "akd: no landmark model given (--landmark-model)" in text
  assert "lpips_alex" in text and "skipped:" in text
  per_clip = []
  for clip in (CLIP_A, CLIP_B):
    real = _frames(root, clip)
    animator.prepare_source(real[0])
    fake = animator.drive(real, relative=False).prediction
    want = _scores(real, fake)
    got = report["per_video"][clip]
    assert got["num_frames"] == len(real)
    for m in ("l1", "psnr", "ssim"):
      assert got[m] == pytest.approx(want[m], rel=2e-4), (clip, m)
    assert 0 < got["lpips_alex"] < 1
    per_clip.append(want["l1"])
  assert report["mean"]["l1"] == pytest.approx(np.mean(per_clip), rel=2e-4)


def test_pairs_and_cross_id(tiny_model_dir, root, animator, tmp_path, capsys):
  out = tmp_path / "pairs.json"
  rc = cli.main(["evaluate", "--checkpoint", str(tiny_model_dir), "--data", str(root),
                 "--protocol", "pairs", "--pairs", str(root / "pairs.csv"),
                 "--metrics", "l1,psnr", "--batch-size", "4", "--out", str(out),
                 "--no-progress"])
  assert rc == 0
  report = json.loads(out.read_text())
  assert report["settings"]["motion_per_row"] == ["absolute", "relative"]
  a, b = _frames(root, CLIP_A), _frames(root, CLIP_B)
  # Row 1: one driving frame, absolute keypoints.
  animator.prepare_source(a[1])
  fake1 = animator.drive(a[3:4], relative=False).prediction
  # Row 2: a whole driving video, relative to its first frame, no scaling.
  animator.prepare_source(b[0])
  fake2 = animator.drive(a, relative=True, adapt_scale=False).prediction
  rows = list(report["per_video"].values())
  assert rows[0]["l1"] == pytest.approx(_scores(a[3:4], fake1)["l1"], rel=2e-4)
  assert rows[1]["l1"] == pytest.approx(_scores(a, fake2)["l1"], rel=2e-4)
  assert rows[1]["num_frames"] == 5
  capsys.readouterr()
  # Cross identity: no ground truth; metrics without their network are
  # skipped, each with its reason printed.
  rc = cli.main(["evaluate", "--checkpoint", str(tiny_model_dir), "--data", str(root),
                 "--protocol", "cross-id", "--pairs", str(root / "pairs.csv"),
                 "--batch-size", "4", "--no-progress"])
  text = capsys.readouterr().out
  assert rc == 0
  assert "l1: cross-identity reenactment has no ground truth" in text
  assert "csim: no identity model given (--identity-model)" in text
  assert "tcm" in text.split("skipped:")[0]   # computed on the whole-video row
  # A pair protocol without its list is a named error.
  rc = cli.main(["evaluate", "--checkpoint", str(tiny_model_dir), "--data", str(root),
                 "--protocol", "pairs", "--no-progress"])
  assert rc == 2 and "needs --pairs CSV" in capsys.readouterr().err
