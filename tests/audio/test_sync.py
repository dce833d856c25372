"""Audio-visual offset of talking-face clips (dagan_jax.audio.sync): real
av_mini clips are in sync, their sound shifted 10 frames either way is
found and flagged, and silence, faceless frames and someone else's speech
are not confident."""

from __future__ import annotations

import fractions
import shutil
import wave

import numpy as np
import pytest

from dagan_jax.audio import align, sync
from dagan_jax.audio import io as audio_io
from dagan_jax.face import mesh as face_mesh
from dagan_jax.input import clip_faces

needs_mesh = pytest.mark.skipif(not face_mesh.face_available(),
                                reason="the face mesh needs ai-edge-litert")

# Clips of two sources (StyleTalk, PC-AVS), long enough (12-27 s) for a
# sure estimate; PROVENANCE.md names no offset for them.
CLIPS = ("train/st_reagan#clip1.mp4", "train/st_andrew#clip2.mp4",
         "test/pcavs_m104#00104.mp4")
FRAME_SAMPLES = 640   # one frame at 25 fps, 16 kHz


def _write_wav(path, samples, rate=audio_io.SAMPLE_RATE):
  with wave.open(str(path), "wb") as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(rate)
    w.writeframes(np.asarray(samples, "<i2").tobytes())


def _delayed(samples, frames):
  """``samples`` moved ``frames`` video frames later (earlier if negative),
  the length kept: silence comes in at one end, sound drops off the other."""
  n = abs(frames) * FRAME_SAMPLES
  pad = np.zeros(n, samples.dtype)
  if frames >= 0:
    return np.concatenate([pad, samples])[:samples.size]
  return np.concatenate([samples[n:], pad])


@pytest.fixture(scope="module")
def av_mini(shared_dir):
  return shared_dir / "data" / "av_mini"


@pytest.fixture(scope="module")
def face():
  if not face_mesh.face_available():
    pytest.skip("the face mesh needs ai-edge-litert")
  return face_mesh.FaceMesh(batch=16)


@pytest.fixture(scope="module")
def meshed(av_mini, face):
  """Mesh points of every clip of CLIPS, meshed once for the module."""
  return {c: clip_faces.mesh_clip(av_mini / c, face).points for c in CLIPS}


def _copy_with_sidecar(av_mini, clip, tmp_path, samples):
  """A copy of ``clip`` in tmp_path with a sidecar .wav of ``samples`` (a
  sidecar wins over the video's own sound)."""
  dst = tmp_path / (clip.split("/")[-1])
  shutil.copy(av_mini / clip, dst)
  _write_wav(dst.with_suffix(".wav"), samples)
  return dst


# -- real clips -------------------------------------------------------------


@needs_mesh
@pytest.mark.parametrize("clip", CLIPS)
def test_real_clips_are_in_sync(av_mini, meshed, clip):
  est = clip_faces.clip_offset(av_mini / clip, points=meshed[clip])
  assert abs(est.offset) <= 2, est
  assert est.confidence >= sync.MIN_CONFIDENCE, est
  assert sync.offset_problem(est) is None
  assert est.fps == 25.0 and est.lags.shape == est.scores.shape == (31,)


@needs_mesh
def test_clip_offset_meshes_the_clip_itself(av_mini, meshed, face):
  clip = CLIPS[2]
  got = clip_faces.clip_offset(av_mini / clip, face)
  want = clip_faces.clip_offset(av_mini / clip, points=meshed[clip])
  assert got.offset == want.offset
  np.testing.assert_allclose(got.scores, want.scores, atol=1e-9)


@needs_mesh
@pytest.mark.parametrize("shift", [10, -10])
def test_sound_shifted_ten_frames_is_found_and_flagged(av_mini, meshed,
                                                       tmp_path, shift):
  clip = CLIPS[0]
  samples = audio_io.read_speech(av_mini / clip)
  copy = _copy_with_sidecar(av_mini, clip, tmp_path, _delayed(samples, shift))
  est = clip_faces.clip_offset(copy, points=meshed[clip])
  assert abs(est.offset - shift) <= 1, est
  assert est.confidence >= sync.MIN_CONFIDENCE, est
  problem = sync.offset_problem(est)
  assert problem is not None
  assert f"{est.offset:+d} frames" in problem
  assert f"{abs(est.offset) * 40} ms" in problem
  assert ("later" if shift > 0 else "earlier") in problem


@needs_mesh
def test_silence_is_not_confident(av_mini, meshed, tmp_path):
  clip = CLIPS[0]
  n = audio_io.read_speech(av_mini / clip).size
  copy = _copy_with_sidecar(av_mini, clip, tmp_path, np.zeros(n, np.int16))
  est = clip_faces.clip_offset(copy, points=meshed[clip])
  assert est.confidence == 0.0 and est.offset == 0
  assert sync.offset_problem(est) is None


@needs_mesh
def test_someone_elses_speech_is_not_confident(av_mini, meshed):
  speech = {c: audio_io.read_speech(av_mini / c) for c in CLIPS}
  for i, clip in enumerate(CLIPS):
    other = speech[CLIPS[(i + 1) % len(CLIPS)]]
    openness = sync.mouth_openness(meshed[clip])
    est = sync.estimate_offset(openness,
                               sync.speech_energy(other, openness.size, 25))
    assert est.confidence < sync.MIN_CONFIDENCE, (clip, est)
    assert sync.offset_problem(est) is None


@needs_mesh
def test_frames_without_a_face_are_not_confident(av_mini, face, tmp_path):
  from dagan_jax.input import media  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  frames = (rng.random((100, 64, 64, 3)) * 255).astype(np.uint8)
  clip = media.write_video(tmp_path / "p#noface.mp4", frames)
  speech = audio_io.read_speech(av_mini / CLIPS[0])[:100 * FRAME_SAMPLES]
  _write_wav(tmp_path / "p#noface.wav", speech)
  est = clip_faces.clip_offset(clip, face)
  assert est.confidence == 0.0 and est.offset == 0
  assert np.isnan(est.scores).all()
  assert sync.offset_problem(est) is None


def test_clip_without_sound_is_a_data_error(tmp_path):
  from dagan_jax.errors import DataError  # pylint: disable=import-outside-toplevel
  from dagan_jax.input import media  # pylint: disable=import-outside-toplevel
  clip = media.write_video(tmp_path / "p#mute.mp4",
                           np.zeros((5, 32, 32, 3), np.uint8))
  # A video without an audio stream, and a frame folder without a sidecar.
  with pytest.raises(DataError, match="p#mute.mp4: no audio stream"):
    clip_faces.clip_offset(clip, points=np.zeros((5, 468, 3)))
  folder = media.write_video(tmp_path / "p#frames", np.zeros((5, 32, 32, 3), np.uint8))
  with pytest.raises(DataError, match="p#frames: no sound .* p#frames.wav"):
    clip_faces.clip_offset(folder, points=np.zeros((5, 468, 3)))


# -- the signals ------------------------------------------------------------


def test_mouth_openness_is_the_lip_gap_over_the_eye_distance():
  pts = np.zeros((3, 468, 3))
  pts[:, 33, 0], pts[:, 263, 0] = 100.0, 160.0   # eyes 60 px apart
  for _, low in sync.LIP_PAIRS:
    pts[:, low, 1] = [0.0, 6.0, 12.0]
  pts[2] *= 2.0                                   # the same face twice as big
  pts = np.concatenate([pts, np.full((1, 468, 3), np.nan)])   # no face
  got = sync.mouth_openness(pts)
  np.testing.assert_allclose(got[:3], [0.0, 0.1, 0.2])
  assert np.isnan(got[3])


@pytest.mark.parametrize("fps", [30, 29.97, fractions.Fraction(30000, 1001), 25])
def test_speech_energy_per_frame_window(fps):
  rng = np.random.default_rng(1)
  sr = audio_io.SAMPLE_RATE
  # Noise whose loudness changes every 10 ms, as speech's does.
  loudness = rng.uniform(50, 5000, size=(sr * 7) // 160).repeat(160)
  samples = np.clip(rng.normal(size=sr * 7) * loudness, -32768, 32767
                    ).astype(np.int16)
  frames = align.num_video_frames(samples.size, sr, fps)
  got = sync.speech_energy(samples, frames, fps)
  assert got.shape == (frames,) and np.isfinite(got).all()
  step = fractions.Fraction(sr) / align.exact_rate(fps)
  x = samples.astype(np.float64) / 32768.0
  for k in (0, 1, frames // 2, frames - 1):
    a, b = int(k * step), int((k + 1) * step)
    np.testing.assert_allclose(got[k], np.log(np.sqrt(np.mean(x[a:b] ** 2))),
                               rtol=1e-9)
  # Float samples give the same; frames past the end of the sound are NaN;
  # digital silence is finite.
  np.testing.assert_allclose(
      sync.speech_energy(audio_io.to_float(samples), frames, fps), got, rtol=1e-6)
  longer = sync.speech_energy(samples, frames + 3, fps)
  assert np.isnan(longer[-2:]).all() and np.isfinite(longer[:frames]).all()
  assert np.all(sync.speech_energy(np.zeros(sr, np.int16), 10, fps)
                == np.log(sync.ENERGY_FLOOR))


# -- estimate_offset on synthetic signals -----------------------------------


def _smooth_noise(rng, n, sigma=2.0):
  """Noise smoothed over a few frames, spread 0.5 (as a log energy: about
  4 dB, well inside the 50 dB that the estimate keeps above silence)."""
  r = int(3 * sigma)
  kernel = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
  x = np.convolve(rng.normal(size=n + 2 * r), kernel, "valid")
  return 0.5 * (x - x.mean()) / x.std()


@pytest.mark.parametrize("delay", [-12, -3, 0, 1, 7, 15])
def test_known_shift_is_recovered_exactly(delay):
  rng = np.random.default_rng(abs(delay))
  t, pad = 300, 20
  base = _smooth_noise(rng, t + 2 * pad)
  openness = base[pad:pad + t]
  energy = base[pad - delay:pad - delay + t]   # energy[t + delay] = openness[t]
  est = sync.estimate_offset(openness, energy)
  assert est.offset == delay
  assert est.confidence >= sync.MIN_CONFIDENCE
  assert est.scores[est.lags == delay][0] == pytest.approx(1.0)
  # Frames without a face (a fifth of them) and a noisier sound change
  # nothing.
  openness = openness.copy()
  openness[rng.random(t) < 0.2] = np.nan
  noisy = energy + 0.3 * rng.normal(size=t)
  est = sync.estimate_offset(openness, noisy)
  assert est.offset == delay and est.confidence >= sync.MIN_CONFIDENCE


def test_unrelated_signals_are_not_confident():
  rng = np.random.default_rng(5)
  confident = 0
  for _ in range(50):
    est = sync.estimate_offset(_smooth_noise(rng, 250), _smooth_noise(rng, 250))
    confident += est.confidence >= sync.MIN_CONFIDENCE
    assert -15 <= est.offset <= 15
  assert confident <= 1


def test_degenerate_inputs_give_no_confident_estimate():
  rng = np.random.default_rng(6)
  sig = _smooth_noise(rng, 200)
  cases = {
      "constant sound": (sig, np.full(200, -3.0)),
      "no face": (np.full(200, np.nan), sig),
      "too few frames": (sig[:20], sig[:20]),
      "few frames with a face": (np.where(np.arange(200) < 15, sig, np.nan), sig),
      "empty": (np.zeros(0), np.zeros(0)),
  }
  for name, (o, e) in cases.items():
    est = sync.estimate_offset(o, e)
    assert est.confidence == 0.0 and est.offset == 0, name
    assert sync.offset_problem(est) is None, name
  # Different lengths: cut to the shorter; max_lag 0 compares one lag only.
  est = sync.estimate_offset(sig, sig[:150])
  assert est.offset == 0 and est.confidence > 0
  est = sync.estimate_offset(sig, sig, max_lag=0)
  assert est.offset == 0 and est.confidence == 0.0 and est.lags.tolist() == [0]


def test_offset_problem_needs_a_large_and_confident_offset():
  lags = np.arange(-15, 16)

  def est(offset, confidence, fps=25.0):
    return sync.SyncEstimate(offset, confidence, lags, np.zeros(31), fps)

  assert sync.offset_problem(est(10, 1.0)) is None            # not sure
  assert sync.offset_problem(est(4, 9.0)) is None             # 160 ms
  assert sync.offset_problem(est(-4, 9.0)) is None
  msg = sync.offset_problem(est(-5, 9.0))                     # 200 ms
  assert "-5 frames" in msg and "200 ms" in msg and "earlier" in msg
  assert sync.offset_problem(est(5, 9.0, fps=30.0)) is None   # 167 ms
  assert "+6 frames" in sync.offset_problem(est(6, 9.0, fps=30.0))
  assert sync.offset_problem(est(10, 9.0), max_offset_ms=500) is None
  assert sync.offset_problem(est(3, 3.0), max_offset_ms=100,
                             min_confidence=2.0) is not None
