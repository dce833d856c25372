"""benchmarks/official_ab.py: the alternating driver, with stand-in workers
(the real contenders need the official checkout and torchvision)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from benchmarks import official_ab

FAKE = """
import sys, time
secs = float(sys.argv[1])
print('some start-up noise', flush=True)
print('ready', flush=True)
for line in sys.stdin:
  if line.strip() != 'step':
    break
  with open(sys.argv[2], 'a') as f:
    f.write(sys.argv[3] + '\\n')
  print(f'{secs} 0.5', flush=True)
"""


def _fake(tmp_path, secs, log, name):
  script = tmp_path / "fake.py"
  script.write_text(FAKE)
  return [sys.executable, str(script), str(secs), str(log), name]


def test_alternate_orders_rounds_and_reports_ratios(tmp_path):
  log = tmp_path / "order.txt"
  res = official_ab.alternate({"a": _fake(tmp_path, 3.0, log, "a"),
                               "b": _fake(tmp_path, 1.5, log, "b")},
                              rounds=4, warmup=1, log=lambda *_: None)
  # warm-up a, b; then rounds alternate the order: ab, ba, ab, ba.
  assert log.read_text().split() == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]
  assert res["times_s"] == {"a": [3.0] * 4, "b": [1.5] * 4}
  assert res["median_s"] == {"a": 3.0, "b": 1.5}
  assert res["median_ratio"] == {"a/b": 2.0, "b/a": 0.5}


def test_alternate_names_a_worker_that_dies(tmp_path):
  dead = [sys.executable, "-c", "import sys; sys.exit(3)"]
  with pytest.raises(RuntimeError, match=r"worker 'gone'.*exit code 3"):
    official_ab.alternate({"ok": _fake(tmp_path, 1.0, tmp_path / "l", "ok"),
                           "gone": dead}, rounds=1, log=lambda *_: None)


def test_contender_specs_are_checked():
  with pytest.raises(ValueError, match="needs --official-dir"):
    official_ab.worker_command("official-train", "50", None)
  with pytest.raises(ValueError, match="unknown contender kind"):
    official_ab.worker_command("pytorch", None, None)
  cmd = official_ab.worker_command("ours-train", "50", None)
  assert cmd[-4:] == ["--worker", "ours-train", "--worker-arg", "50"]
  with pytest.raises(SystemExit):
    official_ab.main(["only=ours-train"])


def test_alternate_starts_each_worker_with_its_environment(tmp_path):
  script = tmp_path / "env.py"
  script.write_text("import os, sys\nprint('ready', flush=True)\n"
                    "for line in sys.stdin:\n  if line.strip() != 'step': break\n"
                    "  print(os.environ.get('AB_SECS', '9'), '0', flush=True)\n")
  cmd = [sys.executable, str(script)]
  res = official_ab.alternate({"a": cmd, "b": cmd, "c": cmd}, rounds=2,
                              log=lambda *_: None,
                              envs={"a": {"AB_SECS": "2"}, "b": {"AB_SECS": "4"}})
  assert res["median_s"] == {"a": 2.0, "b": 4.0, "c": 9.0}


def test_contender_allocators_are_checked():
  with pytest.raises(SystemExit):
    official_ab.main(["a=ours-train:50@bogus", "b=ours-train:50"])


def test_speak_contenders_are_checked():
  with pytest.raises(ValueError, match="wangsuzhen/Audio2Head"):
    official_ab.worker_command("official-speak", None, None)
  with pytest.raises(ValueError, match="grad or nograd|grad\\|:nograd"):
    official_ab.worker_command("official-speak", "fast", "/nowhere")
  for bad in ("gpu", "auto/0", "auto/x"):
    with pytest.raises(ValueError, match="ours-speak"):
      official_ab.worker_command("ours-speak", bad, None)
  cmd = official_ab.worker_command("ours-speak", "xla/16", None)
  assert cmd[-4:] == ["--worker", "ours-speak", "--worker-arg", "xla/16"]
  cmd = official_ab.worker_command("official-speak", "nograd", "/a2h")
  assert cmd[-6:] == ["--worker", "official-speak", "--worker-arg", "nograd",
                      "--official-dir", "/a2h"]


def test_speak_inputs_are_the_fixtures_face_and_speech(a2h_npz):
  image, blocks = official_ab.speak_inputs(32, 64)
  assert image.shape == (256, 256, 3) and image.dtype == "float32"
  assert image.min() >= 0 and image.max() <= 1
  np.testing.assert_array_equal(image * 255, a2h_npz["source/image_uint8"])
  # seq_len blocks for one window, the fixture's own first (T = 92 >= 64).
  assert blocks.shape == (64, 4, 41)
  np.testing.assert_array_equal(blocks, a2h_npz["audio/blocks"][:64])
  # A longer window than the fixture's speech repeats it.
  _, long = official_ab.speak_inputs(32, 128)
  t = len(a2h_npz["audio/blocks"])
  assert long.shape == (128, 4, 41)
  np.testing.assert_array_equal(long[t:], a2h_npz["audio/blocks"][:128 - t])
  np.testing.assert_array_equal(official_ab.speak_samples(), a2h_npz["audio/wav_int16"])


def test_dub_contenders_are_checked():
  with pytest.raises(ValueError, match="Weizhi-Zhong/IP_LAP"):
    official_ab.worker_command("official-dub", None, None)
  with pytest.raises(ValueError, match="losses\\|:noloss"):
    official_ab.worker_command("official-dub", "fast", "/iplap")
  for bad in ("gpu", "auto/0", "xla/two"):
    with pytest.raises(ValueError, match="ours-dub"):
      official_ab.worker_command("ours-dub", bad, None)
  cmd = official_ab.worker_command("ours-dub", "auto/1", None)
  assert cmd[-4:] == ["--worker", "ours-dub", "--worker-arg", "auto/1"]
  cmd = official_ab.worker_command("official-dub", "noloss", "/iplap")
  assert cmd[-6:] == ["--worker", "official-dub", "--worker-arg", "noloss",
                      "--official-dir", "/iplap"]


def test_dub_inputs_are_what_the_official_renderer_saw(iplap_npz):
  """Both dub workers read the fixture's template frames as cv2 does (BGR):
  the crop of window frame 22 and the 25 reference crops, resized as the
  official script, are the fixture's renderer inputs byte for byte."""
  import cv2
  x = official_ab.dub_inputs()
  frames, boxes = x["frames_bgr"], x["boxes"]
  assert frames.shape == (100, 256, 256, 3) and frames.dtype == np.uint8
  np.testing.assert_array_equal(x["mesh131"], iplap_npz["frames/mesh131"])
  np.testing.assert_array_equal(x["mel_chunks"], iplap_npz["audio/mel_chunks"])
  assert len(x["nl_refs"]) == 15 and len(x["img_refs"]) == 25

  def crop(f):
    y1, y2, x1, x2 = boxes[f]
    return cv2.resize(frames[f][y1:y2, x1:x2], (128, 128)).transpose(2, 0, 1)

  k = official_ab.DUB_FIRST_WINDOW
  assert list(iplap_npz["lg/window_frames"]) == list(range(k, k + 5))
  np.testing.assert_array_equal(crop(k + 2), iplap_npz["renderer/in_face_uint8"][0, 0])
  np.testing.assert_array_equal(np.stack([crop(f) for f in x["img_refs"]]),
                                iplap_npz["renderer/in_ref_imgs_uint8"][0])


def test_vgg19_stand_in_has_torchvisions_layers(tmp_path):
  """The stand-in for torchvision's VGG19 (the official renderer's
  perceptual loss runs it in every forward): the 37 feature layers whose
  indices the official ``_vgg19`` names, 20,024,384 parameters; and the
  official script's landmark order is read from its text."""
  torch = pytest.importorskip("torch")
  features = official_ab.vgg19_stand_in(torch).models.vgg19(pretrained=True).features
  assert len(features) == 37
  relus = [i for i, m in enumerate(features) if isinstance(m, torch.nn.ReLU)]
  assert {1, 3, 6, 8, 11, 13, 15, 17, 20, 22, 24, 26, 29} <= set(relus) and len(relus) == 16
  assert [i for i, m in enumerate(features) if isinstance(m, torch.nn.MaxPool2d)] == [
      4, 9, 18, 27, 36]
  assert sum(p.numel() for p in features.parameters()) == 20_024_384
  script = tmp_path / "inference_single.py"
  script.write_text("import os\nori_sequence_idx = [162, 127,\n  234]\nT = 5\n")
  assert official_ab._official_sequence(str(tmp_path)) == [162, 127, 234]
  script.write_text("T = 5\n")
  with pytest.raises(ValueError, match="no ori_sequence_idx"):
    official_ab._official_sequence(str(tmp_path))
