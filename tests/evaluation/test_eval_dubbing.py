"""``evaluate --protocol dubbing`` (IP_LAP's reconstruction setting) on real
clips with sound, with the IP_LAP fixture's converted weights (random, so
the faces it renders are not faces: the point is that every number is the
stated computation on the frames the dub returned).

The renderer costs seconds a face on a CPU, so it runs once in this file:
the command on one clip cut to 5 frames (3 rendered faces, one renderer
call). The model directory keeps the fixture's weights but uses 2 reference
faces instead of 25 (``ip_lap_params.N``: the references are a batch axis
of the renderer, its weights do not depend on their number) and plain XLA
convolutions (``compute.kernels``). The other tests run the protocol with
stand-in "dubbers" that need no network: the identity (returns the
template; its scores are known exactly) and one that brightens the frames.
"""

from __future__ import annotations

import contextlib
import io
import json
import re

import numpy as np
import pytest

from dagan_jax import cli
from dagan_jax.audio import io as audio_io
from dagan_jax.errors import ConfigError, DataError
from dagan_jax.evaluation import dubbing
from dagan_jax.evaluation import metrics as M
from dagan_jax.face import mesh as mesh_lib
from dagan_jax.inference import dub as D
from dagan_jax.input import media

pytestmark = pytest.mark.skipif(not mesh_lib.face_available(),
                                reason="the face mesh needs ai-edge-litert")

CLIP = "pcavs_m104#00104.mp4"    # the first clip of av_mini/test, sorted
FRAMES = 5                        # one window: 3 rendered faces


def identity(template, chunks):
  """A perfect dubber: every output frame is the template frame it redoes."""
  return template.frames[D.make_plan(len(chunks), len(template)).output_template_frame]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, iplap_dir):
  pytest.importorskip("torch")
  root = tmp_path_factory.mktemp("iplap_eval")
  full = root / "full"
  assert cli.main(["convert",
                   "--ip-lap-landmark", str(iplap_dir / "landmarkgenerator_checkpoint.pth"),
                   "--ip-lap-renderer", str(iplap_dir / "renderer_checkpoint.pth"),
                   "--out", str(full)]) == 0
  small = root / "model"
  small.mkdir()
  (small / "variables").symlink_to(full / "variables")
  text = (full / "config.yaml").read_text()
  assert "  N: 25\n" in text and "  kernels: auto\n" in text
  # Plain XLA convolutions: at the tests' LLVM -O0 they trace and run the
  # renderer in half the time of the CPU kernel set (the same arithmetic up
  # to rounding).
  (small / "config.yaml").write_text(text.replace("  N: 25\n", "  N: 2\n")
                                     .replace("  kernels: auto\n", "  kernels: xla\n"))
  return small


@pytest.fixture(scope="module")
def dubber():
  """For the identity: the dubber's template, speech and plan settings (the
  released ones), without its networks' weights (no network runs)."""
  from dagan_jax import config as config_lib
  return D.Dubber(config_lib.from_dict(config_lib.ip_lap_config()),
                  {"ip_lap_landmark": {}, "ip_lap_renderer": {}})


@pytest.fixture(scope="module")
def command(model_dir, shared_dir, tmp_path_factory):
  """The command on one clip, with what it scored recorded."""
  seen = []
  score = dubbing.score_clip

  def spy(clip, generated, **kwargs):
    seen.append((clip, generated))
    return score(clip, generated, **kwargs)

  out = tmp_path_factory.mktemp("dub_report") / "report.json"
  text = io.StringIO()
  with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(text):
    mp.setattr(dubbing, "score_clip", spy)
    rc = cli.main(["evaluate", "--checkpoint", str(model_dir), "--data",
                   str(shared_dir / "data" / "av_mini"), "--protocol", "dubbing",
                   "--num-videos", "1", "--max-frames", str(FRAMES), "--out", str(out),
                   "--batch-size", "3", "--no-progress"])
  return rc, text.getvalue(), out, seen


def _lower_half(frames, boxes):
  """The test's own crop: box, bilinear to 128 x 128, rows 64-127, in [0, 1]."""
  import cv2
  out = []
  for f, (y1, y2, x1, x2) in zip(frames, boxes):
    out.append(cv2.resize(np.ascontiguousarray(f[y1:y2, x1:x2]), (128, 128))[64:])
  return np.stack(out) / np.float32(255)


def _psnr(a, b):
  mse = ((a.astype(np.float64) - b) ** 2).mean(axis=(1, 2, 3))
  return float(np.mean(-10 * np.log10(mse)))


def _ssim(a, b):
  from skimage.metrics import structural_similarity
  return float(np.mean([structural_similarity(
      x.astype(np.float64), y.astype(np.float64), channel_axis=-1, data_range=1.0,
      gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
      for x, y in zip(a, b)]))


def test_command_reports_the_metrics_of_the_frames_it_dubbed(command):
  rc, text, out, seen = command
  assert rc == 0, text
  report = json.loads(out.read_text())
  assert report["protocol"] == "dubbing" and list(report["per_video"]) == [CLIP]
  assert set(report["skipped"]) == {"fid", "lse_c", "lse_d"}
  assert "protocol dubbing: 1 videos, 5 frames, 0 without a face" in text
  assert "psnr_lower" in text and "lmd" in text and "lse_c: needs SyncNet" in text
  assert f"report written to {out}" in text
  m = report["per_video"][CLIP]
  assert m == report["mean"] and m["frames"] == FRAMES and m["faceless"] == 0

  (clip, generated), = seen
  tpl = clip.template
  assert clip.where.endswith(CLIP) and len(tpl) == FRAMES and tpl.found.all()
  assert generated.shape == (FRAMES, 256, 256, 3) and generated.dtype == np.uint8
  # The real frame of each output frame: frames 0 and 1 redo frame 2.
  real = tpl.frames[[2, 2, 2, 3, 4]]
  # The dub changed each frame inside its crop box only, and there a lot.
  for g, r, (y1, y2, x1, x2) in zip(generated, real, tpl.boxes[[2, 2, 2, 3, 4]]):
    outside = np.ones(g.shape[:2], bool)
    outside[y1:y2, x1:x2] = False
    np.testing.assert_array_equal(g[outside], r[outside])
    assert np.abs(g[y1:y2, x1:x2].astype(int) - r[y1:y2, x1:x2]).mean() > 5
  np.testing.assert_array_equal(generated[0], generated[2])   # window 0 thrice

  # PSNR in float64 and SSIM by skimage (metrics.py's conventions, which
  # tests/evaluation/test_eval_metrics.py holds to these), LPIPS by the
  # metric itself on the test's own crops.
  fr, fg = real / np.float32(255), generated / np.float32(255)
  boxes = tpl.boxes[[2, 2, 2, 3, 4]]
  lr, lg = _lower_half(real, boxes), _lower_half(generated, boxes)
  for suffix, a, b in (("", fr, fg), ("_lower", lr, lg)):
    np.testing.assert_allclose(m[f"psnr{suffix}"], _psnr(a, b), rtol=1e-5)
    np.testing.assert_allclose(m[f"ssim{suffix}"], _ssim(a, b), atol=1e-4)
    np.testing.assert_allclose(m[f"lpips{suffix}"], np.mean(M.lpips(a, b)), rtol=1e-5)
  # Random weights draw no face the mesh can find: LMD has no frame to
  # score and says so; five frames are too few to correlate lips and sound.
  gen_mesh = mesh_lib.FaceMesh()(generated)
  assert m["lmd_missed"] == (~gen_mesh.found).sum() == FRAMES
  assert m["lmd"] == "nan"          # write_report's spelling of NaN
  for side in ("gen", "real"):
    assert m[f"sync_{side}_corr"] == "nan" and m[f"sync_{side}_confidence"] == 0


class _MeanColour:
  """A stand-in for the FID Inception: 3 features, the mean colour (FID's
  arithmetic on them is checked in test_fid.py)."""
  source = "mean-colour"

  def __init__(self):
    self.seen = []

  def features(self, frames):
    self.seen.append(np.asarray(frames))
    return np.asarray(frames, np.float64).mean(axis=(1, 2))


class _Lse:
  """A stand-in for SyncNet's scorer that records what it is asked to score."""
  source = "stand-in"
  min_frames = 21

  def __init__(self):
    self.calls = []

  def lse(self, frames, samples, *, fps, boxes, where):
    self.calls.append((where, np.asarray(frames), len(samples), fps, np.asarray(boxes)))
    return {"lse_c": 2.0, "lse_d": 7.0, "offset": 1}


def test_an_identity_dubber_scores_perfectly(dubber, shared_dir, tmp_path):
  fid_model, syncnet = _MeanColour(), _Lse()
  report = dubbing.evaluate_dubbing(dubber, str(shared_dir / "data" / "av_mini"),
                                    num_videos=1, max_frames=30, dub_fn=identity,
                                    fid_model=fid_model, syncnet=syncnet)
  # FID and LSE computed (nothing skipped): FID of the same frames is 0,
  # LSE asked for the generated and the real 30 frames with the speech.
  assert report["skipped"] == {}
  assert report["settings"]["fid_inception"] == "mean-colour"
  assert abs(report["mean"]["fid"]) < 1e-6
  real, fake = fid_model.seen
  assert real.shape == fake.shape and len(real) == 30
  np.testing.assert_array_equal(real, fake)
  assert [c[0] for c in syncnet.calls] == ["lse", "real_lse"]
  for _, frames, n, fps, boxes in syncnet.calls:
    assert len(frames) == len(boxes) == 30 and fps == 25.0 and n > 30 * 640
  m = report["per_video"][CLIP]
  assert (m["lse_c"], m["lse_d"], m["lse_offset"]) == (2.0, 7.0, 1.0)
  assert (m["real_lse_c"], m["real_lse_d"]) == (2.0, 7.0)
  assert m["frames"] == 30 and m["faceless"] == 0 and report["generated_frames"] == 30
  assert np.isinf(m["psnr"]) and np.isinf(m["psnr_lower"])
  assert np.isinf(report["mean"]["psnr"])
  for k in ("ssim", "ssim_lower"):
    assert abs(m[k] - 1) < 1e-6, k
  assert m["lpips"] == m["lpips_lower"] == 0
  # The same frames meshed twice: the same lips, the same sync figures.
  assert m["lmd_missed"] == 0 and m["lmd"] < 1e-3
  assert -1 <= m["sync_real_corr"] <= 1 and abs(m["sync_real_offset"]) <= 15
  for k in ("corr", "offset", "confidence"):
    np.testing.assert_allclose(m[f"sync_gen_{k}"], m[f"sync_real_{k}"], atol=1e-6)
  out = tmp_path / "r.json"
  from dagan_jax.evaluation import evaluator
  evaluator.write_report(out, report)
  assert json.loads(out.read_text())["mean"]["psnr"] == "inf"


def _write_clip(path, frames, samples=None):
  media.write_video(path, frames, 25.0, audio=samples)
  return str(path)


def test_faceless_frames_are_counted_and_bad_clips_named(dubber, shared_dir, tmp_path):
  src = shared_dir / "data" / "av_mini" / "test" / CLIP
  frames = D.read_template_frames(src)[0][:12].copy()
  samples = audio_io.read_speech(src)[:16000]    # 1 s: 21 mel chunks
  split = tmp_path / "root" / "test"
  split.mkdir(parents=True)
  frames[5:7] = 0                                 # two frames without a face
  _write_clip(split / "a#gaps.mp4", frames, samples)

  def brighter(template, chunks):
    """A poor dubber: every frame it redoes, 20 levels brighter."""
    return np.minimum(identity(template, chunks).astype(np.int32) + 20, 255
                      ).astype(np.uint8)

  seen = []
  report = dubbing.evaluate_dubbing(dubber, str(tmp_path / "root"), dub_fn=brighter,
                                    keep=lambda clip, gen: seen.append((clip, gen)))
  m = report["per_video"]["a#gaps.mp4"]
  assert m["frames"] == 12 and m["faceless"] == 2 and report["faceless_frames"] == 2
  (clip, gen), = seen
  src_frames = [2, 2, 2] + list(range(3, 12))
  real = clip.template.frames[src_frames]
  face = np.array([f not in (5, 6) for f in src_frames])
  np.testing.assert_array_equal(clip.template.found[src_frames], face)
  # Whole frames: all 12; the lower face and LMD: the 10 with a face.
  np.testing.assert_allclose(m["psnr"], _psnr(real / 255, gen / 255), rtol=1e-5)
  boxes = clip.template.boxes[src_frames][face]
  np.testing.assert_allclose(
      m["psnr_lower"], _psnr(_lower_half(real[face], boxes),
                             _lower_half(gen[face], boxes)), rtol=1e-5)
  fm = mesh_lib.FaceMesh()
  a, b = fm(real[face]), fm(gen[face])
  assert a.found.all() and b.found.all() and m["lmd_missed"] == 0
  lips = list(dubbing.LIP_MESH_IDS)
  assert len(lips) == 40
  want = np.abs(a.points[:, lips, :2] - b.points[:, lips, :2]).mean()
  # Brightness moves the mesh a little: a small LMD, in pixels.
  np.testing.assert_allclose(m["lmd"], want, rtol=1e-5)
  assert 0 < m["lmd"] < 3
  # The mean over clips leaves NaN out and keeps an infinite PSNR infinite.
  mean = dubbing.mean_over_clips({"a": {"psnr": np.inf, "sync": np.nan, "lmd": 1.0},
                                  "b": {"psnr": 30.0, "sync": 0.5, "lmd": 3.0}})
  assert mean == {"psnr": np.inf, "sync": 0.5, "lmd": 2.0}

  no_sound = _write_clip(tmp_path / "mute.mp4", frames)
  with pytest.raises(DataError, match=f"{re.escape(no_sound)}: no audio stream"):
    dubbing.evaluate_clip(dubber, no_sound, dub_fn=identity)
  short = _write_clip(tmp_path / "short.mp4", frames[:4], samples)
  with pytest.raises(DataError, match=rf"{re.escape(short)}: 4 frame\(s\) with "
                                      r"speech .* one window of 5"):
    dubbing.evaluate_clip(dubber, short, dub_fn=identity)
  blank = _write_clip(tmp_path / "blank.mp4", np.zeros_like(frames[:8]), samples)
  with pytest.raises(DataError, match=f"{re.escape(blank)}: no face found in any of "
                                      "its 8 frames"):
    dubbing.evaluate_clip(dubber, blank, dub_fn=identity)
  tiny = _write_clip(tmp_path / "tiny.mp4", frames, samples[:2000])
  with pytest.raises(DataError, match="at least 3000 samples"):
    dubbing.evaluate_clip(dubber, tiny, dub_fn=identity)
  with pytest.raises(ConfigError, match="--max-frames 3 is shorter than one window"):
    dubbing.evaluate_dubbing(dubber, str(tmp_path / "root"), max_frames=3)
