"""IP_LAP's log-mel spectrogram and chunks against the official code's
numbers (the fixture, computed with librosa 0.9.2)."""

import numpy as np
import pytest

from dagan_jax.audio import mel


def test_mel_basis_and_spectrogram_match_the_official_code(iplap_npz):
  basis = mel.mel_basis()
  want_basis = iplap_npz["audio/mel_basis"]
  assert basis.dtype == np.float32 and basis.shape == want_basis.shape
  assert np.abs(basis - want_basis).max() <= 1e-5 * np.abs(want_basis).max()
  spec = mel.melspectrogram(iplap_npz["audio/wav"])
  want = iplap_npz["audio/mel"]
  assert spec.shape == want.shape
  # Features: 1e-5 of the [-4, 4] range.
  assert np.abs(spec - want).max() <= 1e-5 * mel.MAX_ABS_VALUE
  np.testing.assert_array_equal(mel.chunk_starts(spec.shape[1]),
                                iplap_npz["audio/mel_chunk_start"])
  chunks = mel.mel_chunks(spec)
  assert chunks.shape == iplap_npz["audio/mel_chunks"].shape
  assert np.abs(chunks - iplap_npz["audio/mel_chunks"]).max() <= 1e-5 * 4


def test_stft_of_a_tone_peaks_at_its_bin():
  t = np.arange(16000) / 16000.0
  mag = mel.stft_magnitude(np.sin(2 * np.pi * 1000.0 * t))
  assert mag.shape == (401, 81)
  assert int(np.argmax(mag[:, 40])) == 50  # 1000 Hz / (16000 / 800)


@pytest.mark.parametrize("fps", [25, 30, 29.97, 24, 50])
def test_chunk_starts_are_the_official_float_rule(fps):
  """The exact-rate starts equal IP_LAP's ``int(i * 80. / fps)`` loop."""
  n = 4000
  want, i = [], 0
  while int(i * 80.0 / fps) + 16 <= n:
    want.append(int(i * 80.0 / fps))
    i += 1
  np.testing.assert_array_equal(mel.chunk_starts(n, fps), want)
