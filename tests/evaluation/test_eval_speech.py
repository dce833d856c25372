"""``evaluate --protocol speech`` on real clips with sound, with the official
Audio2Head fixture's checkpoint (random weights): every metric is computed
from the clip itself and the figures hang together."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dagan_jax import cli
from dagan_jax.audio import pitch
from dagan_jax.face import mesh as mesh_lib

pytestmark = pytest.mark.skipif(
    not (pitch.harvest_available() and mesh_lib.face_available()),
    reason="needs pyworld (Harvest) and the face extra")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, a2h_dir):
  pytest.importorskip("torch")
  out = tmp_path_factory.mktemp("a2h_eval") / "model"
  assert cli.main(["convert", "--audio2head", str(a2h_dir / "audio2head.pth.tar"),
                   "--config", str(a2h_dir / "config.yaml"), "--out", str(out)]) == 0
  return out


def test_speech_protocol_reports_every_metric(model_dir, shared_dir, tmp_path, capsys):
  out = tmp_path / "report.json"
  rc = cli.main(["evaluate", "--checkpoint", str(model_dir), "--data",
                 str(shared_dir / "data" / "av_mini"), "--protocol", "speech",
                 "--num-videos", "1", "--max-frames", "32", "--out", str(out),
                 "--no-progress", "--batch-size", "8"])
  text = capsys.readouterr().out
  assert rc == 0, text
  report = json.loads(out.read_text())
  assert report["protocol"] == "speech" and len(report["per_video"]) == 1
  assert set(report["skipped"]) == {"lse_c", "lse_d"}
  for name, m in report["per_video"].items():
    assert m["frames"] == 32, name
    # Random weights: keypoints far from the detector's, yet finite and bounded.
    assert 0 < m["kp_l1"] < 2 and np.isfinite(m["jac_l1"])
    assert 0 < m["l1"] < 1 and 0 < m["ssim"] <= 1 and np.isfinite(m["psnr"])
    # The real speaker's head moves; poses are in the camera's units.
    assert m["real_rot_std"] > 0 and m["real_trans_std"] > 0
    assert m["pred_rot_std"] >= 0 and "motion_std_ratio" in m
    # Lip sync on the real clip: a correlation in [-1, 1] at a lag in range.
    assert -1 <= m["sync_real_corr"] <= 1 and abs(m["sync_real_offset"]) <= 15
    assert m["sync_gen_confidence"] >= 0
  assert "kp_l1" in text and "lse_c" in text
