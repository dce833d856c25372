"""SyncNet and LSE-C / LSE-D on a real clip with its sound.

The reference is a small PyTorch re-implementation of the official network
``S`` (joonson/syncnet_python ``SyncNetModel.py``), written here from the
official layer list, with random weights and random BatchNorm statistics
saved as a state dict in the legacy (pre-zip) format of
``syncnet_v2.model``; ours converts it and must give the same embeddings.
With random weights the offset says nothing about the clip, so the scores
are checked against a direct numpy transcription of the official
``calc_pdist`` / ``evaluate`` formula on the same embeddings, and shifting
the sound must shift the distance matrix by exactly as many frames.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest

from dagan_jax.convert import syncnet as convert_syncnet
from dagan_jax.errors import CheckpointMismatchError, DataError
from dagan_jax.evaluation import syncnet
from dagan_jax.models.syncnet import abstract_variables

torch = pytest.importorskip("torch")

CLIP = "test/st_feifeili#clip3.mp4"
FRAMES = 24          # 19 windows: above the 21 frames LSE needs
SHIFT = 3            # frames of sound dropped for the shift test


def _torch_syncnet() -> "torch.nn.Module":
  """The official ``S``: two Sequentials of (conv, BN, ReLU[, max pool])
  and two Linear-BN-ReLU-Linear heads, indices as in the official file."""
  nn = torch.nn

  def tower(conv, bn, pool, spec):
    layers = []
    for out_c, in_c, kernel, stride, padding, pool_after in spec:
      layers += [conv(in_c, out_c, kernel, stride=stride, padding=padding),
                 bn(out_c), nn.ReLU()]
      if pool_after is not None:
        layers.append(pool(*pool_after))
    return nn.Sequential(*layers)

  def head():
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(),
                         nn.Linear(512, 1024))

  net = nn.Module()
  net.netcnnaud = tower(nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, [
      (64, 1, 3, 1, 1, ((1, 1), (1, 1))), (192, 64, 3, 1, 1, ((3, 3), (1, 2))),
      (384, 192, 3, 1, 1, None), (256, 384, 3, 1, 1, None),
      (256, 256, 3, 1, 1, ((3, 3), (2, 2))), (512, 256, (5, 4), 1, 0, None)])
  net.netcnnlip = tower(nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d, [
      (96, 3, (5, 7, 7), (1, 2, 2), 0, ((1, 3, 3), (1, 2, 2))),
      (256, 96, (1, 5, 5), (1, 2, 2), (0, 1, 1), ((1, 3, 3), (1, 2, 2), (0, 1, 1))),
      (256, 256, (1, 3, 3), 1, (0, 1, 1), None), (256, 256, (1, 3, 3), 1, (0, 1, 1), None),
      (256, 256, (1, 3, 3), 1, (0, 1, 1), ((1, 3, 3), (1, 2, 2))),
      (512, 256, (1, 6, 6), 1, 0, None)])
  net.netfcaud, net.netfclip = head(), head()
  return net


def _forward(net, cnn, fc, x):
  with torch.no_grad():
    mid = getattr(net, cnn)(torch.from_numpy(x))
    return getattr(net, fc)(mid.reshape(mid.shape[0], -1)).numpy()


def _official_scores(video, audio, vshift):
  """calc_pdist + the lines of evaluate() after it, in float64 numpy."""
  video, audio = np.asarray(video, np.float64), np.asarray(audio, np.float64)
  padded = np.concatenate([np.zeros((vshift, audio.shape[1])), audio,
                           np.zeros((vshift, audio.shape[1]))])
  dists = np.stack([np.linalg.norm(video[i] - padded[i:i + 2 * vshift + 1] + 1e-6,
                                   axis=1) for i in range(len(video))])
  mdist = dists.mean(axis=0)
  best = int(np.argmin(mdist))
  return dists, mdist[best], np.sort(mdist)[vshift] - mdist[best], vshift - best


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
  torch.manual_seed(0)
  net = _torch_syncnet().eval()
  g = torch.Generator().manual_seed(1)
  for m in net.modules():
    if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
      c = m.num_features
      m.weight.data = 0.5 + torch.rand(c, generator=g)
      m.bias.data = 0.1 * torch.randn(c, generator=g)
      m.running_mean.data = 0.1 * torch.randn(c, generator=g)
      m.running_var.data = 0.5 + 1.5 * torch.rand(c, generator=g)
  path = tmp_path_factory.mktemp("syncnet") / "syncnet_v2.model"
  torch.save(net.state_dict(), str(path), _use_new_zipfile_serialization=False)
  return net, path


@pytest.fixture(scope="module")
def clip(shared_dir):
  from dagan_jax.audio import io as audio_io
  from dagan_jax.face import crop, mesh as mesh_lib
  from dagan_jax.input import media
  if not mesh_lib.face_available():
    pytest.skip("needs the face extra (face mesh)")
  path = shared_dir / "data" / "av_mini" / CLIP
  video, fps = media.read_video(path)
  frames = np.clip(np.rint(video[:FRAMES] * 255), 0, 255).astype(np.uint8)
  points = mesh_lib.FaceMesh()(frames).points
  return {"frames": frames, "fps": fps, "points": points,
          "boxes": crop.mesh_boxes(points), "samples": audio_io.read_speech(path)}


@pytest.fixture(scope="module")
def scorer(weights):
  return syncnet.load(weights[1], batch_size=10)   # 19 windows: 2 calls


@pytest.fixture(scope="module")
def embedded(scorer, clip):
  video, audio = scorer.embed(clip["frames"], clip["samples"], boxes=clip["boxes"])
  return video, audio


def test_towers_match_the_official_network(weights, scorer, clip, embedded):
  net, _ = weights
  # The MFCC is python_speech_features' on the raw int16 values.
  psf = pytest.importorskip("python_speech_features")
  pcm = clip["samples"][:FRAMES * 640]
  ours = syncnet.mfcc_windows(pcm.astype(np.float64), FRAMES - 5)
  rows = psf.mfcc(pcm, 16000).T                      # (13, rows), as the official cc
  want = np.stack([rows[:, 4 * v:4 * v + 20] for v in range(FRAMES - 5)])
  np.testing.assert_allclose(ours, want.astype(np.float32), rtol=1e-6, atol=1e-5)
  got = scorer.embed_audio(ours)
  ref = _forward(net, "netcnnaud", "netfcaud", ours[:, None])
  assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
  # Lips: the first 4 windows of the crops embed() cut, BGR
  # (N, 3, 5, 224, 224) as the official code feeds them.
  crops = syncnet.face_crops(clip["frames"], clip["boxes"])
  assert crops.shape == (FRAMES, 224, 224, 3) and crops.dtype == np.uint8
  got = embedded[0][:4]
  bgr = crops[..., ::-1].astype(np.float32)
  win = np.stack([bgr[v:v + 5] for v in range(4)]).transpose(0, 4, 1, 2, 3)
  ref = _forward(net, "netcnnlip", "netfclip", np.ascontiguousarray(win))
  assert got.shape == ref.shape == (4, 1024)
  assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


def test_scores_are_the_official_formula_and_follow_the_sound(scorer, clip, embedded):
  video, audio = embedded
  assert video.shape == audio.shape == (FRAMES - 5, 1024)
  dists, lse_d, lse_c, offset = _official_scores(video, audio, 15)
  s = syncnet.sync_scores(video, audio, vshift=15)
  np.testing.assert_allclose(np.asarray(s["dists"]), dists, rtol=1e-5)
  assert int(s["offset"]) == offset
  np.testing.assert_allclose([float(s["lse_d"]), float(s["lse_c"])], [lse_d, lse_c],
                             rtol=1e-5, atol=1e-5 * lse_d)

  # Sound that starts SHIFT frames later in the recording: its window v is
  # the original's window v + SHIFT (same MFCC rows from window 1 on), so
  # the distance of video window i at offset m becomes that at m + SHIFT.
  # (The video is the same: only the sound is embedded again.)
  n = len(video)
  late = clip["samples"][640 * SHIFT:640 * (SHIFT + FRAMES)] / 32768.0  # float form
  a2 = scorer.embed_audio(syncnet.mfcc_windows(syncnet.pcm_samples(late, "late"), n))
  pcm = clip["samples"][:640 * (FRAMES + SHIFT)].astype(np.float64)
  longer = scorer.embed_audio(syncnet.mfcc_windows(pcm, n + SHIFT))
  np.testing.assert_allclose(longer[:n], audio, rtol=0, atol=1e-5 * np.abs(audio).max())
  assert np.abs(a2[1:] - longer[1 + SHIFT:]).max() <= 1e-5 * np.abs(longer).max()
  d2, *_ = _official_scores(video, a2, 15)
  i, m = np.meshgrid(np.arange(n), np.arange(31 - SHIFT), indexing="ij")
  real = (i + m - 15 >= 1) & (i + m + SHIFT - 15 < len(audio))
  np.testing.assert_allclose(d2[i[real], m[real]], dists[i[real], m[real] + SHIFT],
                             rtol=1e-4)
  # Embeddings in sync give offset 0 and LSE-D ~0; sound lagging the lips
  # by k frames gives -k (independent random embeddings, 40 windows).
  rng = np.random.default_rng(0)
  emb = rng.normal(size=(40, 64)).astype(np.float32)
  s = syncnet.sync_scores(emb, emb)
  assert int(s["offset"]) == 0 and float(s["lse_d"]) < 1e-3 < float(s["lse_c"])
  for k in (-4, 2, 7):
    lagged = np.roll(emb, k, axis=0)
    assert int(syncnet.sync_scores(emb, lagged)["offset"]) == -k, k


def test_bad_weights_and_bad_clips_are_named(weights, scorer, clip, tmp_path,
                                             monkeypatch):
  net, path = weights
  with pytest.raises(DataError, match="no-such.model"):
    syncnet.load(tmp_path / "no-such.model")
  junk = tmp_path / "junk.model"
  junk.write_bytes(b"not a torch file")
  with pytest.raises(DataError, match="junk.model"):
    syncnet.load(junk)
  bad = tmp_path / "bad.model"          # another network's weights
  torch.save({"fc.weight": torch.zeros(3, 4)}, str(bad))
  with pytest.raises(CheckpointMismatchError, match=r"bad.model(.|\n)*fc.weight"):
    syncnet.load(bad)
  # One key renamed, one cut short: each named, with the expected shape.
  sd = {k: v.numpy() for k, v in net.state_dict().items()}
  sd["netcnnlip.0.bias_extra"] = sd.pop("netcnnlip.0.bias")
  sd["netfcaud.3.weight"] = sd["netfcaud.3.weight"][:512]
  with pytest.raises(CheckpointMismatchError) as e:
    convert_syncnet.convert_state_dict(sd, abstract_variables(), source="x.model")
  text = str(e.value)
  assert "x.model" in text and "missing keys (1)" in text
  assert "netcnnlip.0.bias: [96]" in text and "netcnnlip.0.bias_extra" in text
  assert "netfcaud.3.weight: file [512, 512], expected [1024, 512]" in text
  # The state dict of the official SyncNetInstance (prefix __S__.) is read.
  wrapped = {f"__S__.{k}": v for k, v in net.state_dict().items()}
  flat = convert_syncnet.convert_state_dict(wrapped, abstract_variables())
  np.testing.assert_array_equal(flat["params"]["netfclip_3"]["kernel"],
                                net.netfclip[3].weight.detach().numpy().T)
  monkeypatch.setitem(sys.modules, "torch", None)   # torch not installed
  with pytest.raises(DataError, match=r"syncnet_v2.model needs torch"):
    syncnet.load(path)
  monkeypatch.undo()

  frames, samples, boxes = clip["frames"], clip["samples"], clip["boxes"]
  with pytest.raises(DataError, match="at least 21"):
    scorer.lse(frames[:20], samples, boxes=boxes[:20])
  with pytest.raises(DataError, match="at least 21"):   # sound for 0.8 s only
    scorer.lse(frames, samples[:640 * 20], boxes=boxes)
  for none in (None, np.zeros(0, np.int16)):
    with pytest.raises(DataError, match="no sound"):
      scorer.lse(frames, none, boxes=boxes, where="clip.mp4")
  with pytest.raises(DataError, match="silent"):
    scorer.lse(frames, np.zeros_like(samples), boxes=boxes)
  with pytest.raises(DataError, match="no frame has a face"):
    scorer.lse(frames, samples, boxes=np.full((FRAMES, 4), np.nan))


def test_speech_protocol_reports_lse(scorer, clip, embedded):
  from dagan_jax.evaluation import speech
  points, frames, samples = clip["points"], clip["frames"], clip["samples"]
  out = speech.lse_scores(scorer, frames, points, samples, 25.0, "real_lse")
  video, audio = embedded
  _, lse_d, lse_c, offset = _official_scores(video, audio, 15)
  assert out["real_lse_offset"] == offset
  np.testing.assert_allclose([out["real_lse_d"], out["real_lse_c"]], [lse_d, lse_c],
                             rtol=1e-5, atol=1e-5 * lse_d)
  # Too short for LSE, or no face: NaN, left out of the means.
  short = speech.lse_scores(scorer, frames[:10], points[:10], samples, 25.0, "lse")
  assert set(short) == {"lse_c", "lse_d", "lse_offset"}
  assert all(np.isnan(v) for v in short.values())
  assert "--syncnet syncnet_v2.model" in speech.LSE_SKIPPED["lse_c"]
  # Other frame rates are resampled to 25 fps by nearest frame.
  np.testing.assert_array_equal(syncnet.resample_to_25(64, 50.0), 2 * np.arange(32))
  np.testing.assert_array_equal(syncnet.resample_to_25(6, 30.0), [0, 1, 2, 4, 5])
  assert pathlib.Path(scorer.source).name == "syncnet_v2.model"
