"""``dub`` (IP_LAP visual dubbing) against the official inference.

The fixture's two official checkpoints are converted by ``dagan-jax convert
--ip-lap-landmark/--ip-lap-renderer``; :class:`dagan_jax.inference.dub.
Dubber` then builds every input of the networks the way it does for a real
template (the fixture's template frames and speech) and must reproduce the
official ``inference_single.py``'s arrays: crop boxes, crop-normalised
landmarks, reference frames, mel chunks and their per-window indices, the
landmark generator's inputs and output for window k, and the renderer's
inputs (BGR faces, sketches, mel) and generated face. The fixture's mesh came
from MediaPipe's Python package, ours from the TFLite models, so the glue is
checked on the fixture's own mesh points, and our mesh separately against
them. Then the command end to end: a real clip and a still image with other
speech, and its errors.

Network outputs are held to 1e-4 of max(1, max|official|) as the parity
tests; inputs the glue builds by copying, cropping and drawing are held to a
few float32 ulps. The renderer (18.9 M parameters, 25 references) costs
seconds a frame on a CPU, so speech here is a few frames long: 3 mel chunks
make one rendered face (the first window fills the first three frames).
"""

from __future__ import annotations

import pathlib
import wave

import numpy as np
import pytest

from dagan_jax import cli
from dagan_jax.audio import io as audio_io
from dagan_jax.audio import mel as mel_lib
from dagan_jax.errors import DataError
from dagan_jax.face import mesh as mesh_lib
from dagan_jax.inference import dub as D
from dagan_jax.input import media

RTOL = 1e-4
TEMPLATE = "vox_mini/test/id10009#iplap_129#000000#000100.mp4"
CLIP = "av_mini/test/st_feifeili#clip1.mp4"
OTHER_SPEECH = "av_mini/test/pcavs_m104#00104.mp4"
#: Samples of speech giving 3 mel chunks (23 mel columns): one rendered face.
THREE_CHUNKS = 4400

pytestmark = pytest.mark.skipif(not mesh_lib.face_available(),
                                reason="the face mesh needs ai-edge-litert")


def _err(got, want) -> float:
  want = np.asarray(want, np.float64)
  return float(np.abs(np.asarray(got, np.float64) - want).max()
               / max(1.0, np.abs(want).max()))


def _write_wav(path: pathlib.Path, samples: np.ndarray) -> pathlib.Path:
  with wave.open(str(path), "wb") as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(16000)
    w.writeframes(np.asarray(samples).astype("<i2").tobytes())
  return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, iplap_dir):
  pytest.importorskip("torch")
  out = tmp_path_factory.mktemp("iplap") / "model"
  assert cli.main(["convert",
                   "--ip-lap-landmark", str(iplap_dir / "landmarkgenerator_checkpoint.pth"),
                   "--ip-lap-renderer", str(iplap_dir / "renderer_checkpoint.pth"),
                   "--out", str(out)]) == 0
  return out


@pytest.fixture(scope="module")
def dubber(model_dir):
  # The command's compiled shapes (--batch-size 1, default window batch),
  # so that its tests find the programs in the compilation cache.
  return D.Dubber.from_checkpoint(model_dir, batch_size=1)


@pytest.fixture(scope="module")
def fixture_template(dubber, shared_dir, iplap_npz):
  frames, fps, n = D.read_template_frames(shared_dir / "data" / TEMPLATE)
  assert frames.shape == (100, 256, 256, 3) and fps is None and n == 100
  return dubber.template_from_frames(frames, mesh131=iplap_npz["frames/mesh131"])


@pytest.fixture(scope="module")
def short_speech(tmp_path_factory, shared_dir) -> pathlib.Path:
  """Another person's speech (not the template clip's), 3 mel chunks long."""
  samples = audio_io.read_speech(shared_dir / "data" / OTHER_SPEECH)
  path = tmp_path_factory.mktemp("speech") / "other.wav"
  return _write_wav(path, samples[8000:8000 + THREE_CHUNKS])


# --------------------------------------------------------------------------
# The model directory


def test_converted_model_directory(model_dir, dubber):
  import json
  p = dubber.config.ip_lap_params
  # The fixture's generator sizes, read from its state dict.
  assert (p.T, p.d_model, p.nlayers, p.nhead, p.dim_feedforward) == (5, 512, 2, 4, 64)
  assert (p.Nl, p.N, p.img_size, p.mel_step, p.fps) == (15, 25, 128, 16, 25)
  counts = json.loads((model_dir / "model_info.json").read_text())["param_counts"]
  assert counts == {"ip_lap_landmark": 7_550_826, "ip_lap_renderer": 18_963_235}
  assert sorted(dubber.variables) == ["ip_lap_landmark", "ip_lap_renderer"]
  assert dubber.landmark_net.nlayers == 2 and dubber.landmark_net.dim_feedforward == 64


def test_convert_names_a_file_given_as_the_wrong_network(iplap_dir, tmp_path, capsys):
  pytest.importorskip("torch")
  lmk = str(iplap_dir / "landmarkgenerator_checkpoint.pth")
  ren = str(iplap_dir / "renderer_checkpoint.pth")
  rc = cli.main(["convert", "--ip-lap-landmark", ren, "--ip-lap-renderer", lmk,
                 "--out", str(tmp_path / "m")])
  err = capsys.readouterr().err
  assert rc == 2 and ren in err and "swap" in err
  rc = cli.main(["convert", "--ip-lap-landmark", lmk, "--out", str(tmp_path / "m")])
  assert rc == 2 and "--ip-lap-renderer" in capsys.readouterr().err
  assert not (tmp_path / "m").exists()


# --------------------------------------------------------------------------
# The glue against the official inference


def test_template_preprocessing_and_references(fixture_template, iplap_npz):
  fx, tpl = iplap_npz, fixture_template
  np.testing.assert_array_equal(tpl.boxes, fx["frames/box_y1y2x1x2"])
  np.testing.assert_allclose(tpl.landmarks[:, :, :74], fx["frames/pose_landmarks"],
                             rtol=0, atol=1e-6)
  np.testing.assert_allclose(tpl.landmarks[:, :, 74:], fx["frames/content_landmarks"],
                             rtol=0, atol=1e-6)
  np.testing.assert_allclose(tpl.openness, fx["frames/lip_dist"], rtol=1e-6)
  assert tpl.found.all() and len(tpl.interpolated) == 0


def test_landmark_generator_and_renderer_inside_the_dubber(dubber, fixture_template,
                                                           iplap_npz, iplap_dir):
  fx, tpl = iplap_npz, fixture_template
  samples = audio_io.read_speech(iplap_dir / "speech_16k.wav")
  chunks = dubber.mel_chunks(samples)
  assert chunks.shape == fx["audio/mel_chunks"].shape
  assert _err(chunks, fx["audio/mel_chunks"]) < 1e-6
  plan = dubber.plan(len(chunks), len(tpl))
  k = int(fx["lg/window_frames"][0])
  # The official loop: windows 0 .. C-3, the first shown three times.
  assert plan.num_windows == len(chunks) - 2 and plan.num_frames == len(chunks)
  np.testing.assert_array_equal(plan.output_window[:4], [0, 0, 0, 1])
  np.testing.assert_array_equal(plan.frame_index[k], fx["lg/window_frames"])
  np.testing.assert_array_equal(plan.mel_index[k], fx["lg/window_mel_chunk_index"])

  refs = dubber.references(tpl)
  np.testing.assert_array_equal(refs.landmark_frames, fx["frames/nl_ref_frames"])
  np.testing.assert_array_equal(refs.image_frames, fx["frames/ref_img_frames"])
  swap = lambda a: np.swapaxes(np.asarray(a), -1, -2)  # noqa: E731
  np.testing.assert_array_equal(refs.pose, swap(fx["lg/in_Nl_pose"][0]))
  np.testing.assert_array_equal(refs.content, swap(fx["lg/in_Nl_content"][0]))
  mels, pose = dubber.landmark_inputs(tpl, chunks, plan, [k])
  assert _err(mels, np.moveaxis(fx["lg/in_T_mels"], 2, -1)) < 1e-6
  np.testing.assert_array_equal(pose, swap(fx["lg/in_T_pose"]))

  # The landmark generator on window k (one batch of the compiled windows).
  window = D.DubPlan(plan.mel_index[k:k + 1], plan.frame_index[k:k + 1],
                     plan.output_window[:1], plan.centre)
  content = dubber.landmarks(tpl, chunks, window, refs)
  want = swap(fx["lg/out_predict_content"])[None]
  assert content.shape == want.shape and _err(content, want) < RTOL

  # The renderer's inputs for the window's centre frame, from the official
  # predicted content (drawing is exact; a point a rounding away from a
  # pixel edge would move a line).
  official = np.zeros((plan.num_windows,) + want.shape[1:], np.float32)
  official[k] = want[0]
  x = dubber.render_inputs(tpl, chunks, plan, official, [k])
  nhwc = lambda a: np.moveaxis(np.asarray(a), -3, -1)  # noqa: E731
  assert _err(x["face"], nhwc(fx["renderer/in_face_uint8"][0]) / 255.0) < 1e-7
  np.testing.assert_allclose(x["target"], nhwc(fx["renderer/in_target_sketches"]),
                             rtol=0, atol=1e-6)
  assert _err(refs.images, nhwc(fx["renderer/in_ref_imgs_uint8"][0]) / 255.0) < 1e-7
  np.testing.assert_allclose(refs.sketches, nhwc(fx["renderer/in_ref_sketches"][0]),
                             rtol=0, atol=1e-6)
  assert _err(x["mel"], fx["renderer/in_mel"][0, 0]) < 1e-6
  # Our own prediction draws the same sketches.
  ours = np.zeros_like(official)
  ours[k] = content[0]
  np.testing.assert_allclose(dubber.render_inputs(tpl, chunks, plan, ours, [k])["target"],
                             x["target"], rtol=0, atol=1e-6)

  # The generated face: BGR in the network, RGB out of the dubber.
  faces, sketches = dubber.render(tpl, chunks, plan, official, refs, windows=[k])
  generated = nhwc(fx["renderer/out_generated_face"][0])[..., ::-1]
  assert faces.shape == (1, 128, 128, 3) and _err(faces[0], generated) < RTOL
  np.testing.assert_array_equal(sketches[0], x["target"][0, plan.centre])

  # Paste-back: inside the crop box only (the feathered mask ends within
  # the blur's reach of the contour), the rest of the frame untouched.
  frame_index = plan.frame_index[k, plan.centre]
  comp = dubber.composite(tpl, plan, faces, [k])[0]
  frame = tpl.frames[frame_index]
  y1, y2, x1, x2 = tpl.boxes[frame_index]
  changed = np.any(comp != frame, axis=-1)
  ys, xs = np.nonzero(changed)
  assert changed.sum() > 0.2 * (y2 - y1) * (x2 - x1)
  assert ys.min() >= y1 and ys.max() < y2 and xs.min() >= x1 and xs.max() < x2
  mask = D.face_mask(tpl.mesh131[frame_index], frame.shape[:2])
  inner = mask > 0.999
  pasted = D.paste_face(frame, faces[0], tpl.boxes[frame_index],
                        tpl.mesh131[frame_index])
  np.testing.assert_array_equal(pasted, comp)
  import cv2
  resized = cv2.resize((faces[0] * 255).astype(np.uint8), (x2 - x1, y2 - y1))
  np.testing.assert_array_equal(comp[y1:y2, x1:x2][inner[y1:y2, x1:x2]],
                                resized[inner[y1:y2, x1:x2]])


def test_our_mesh_gives_the_official_landmarks(dubber, shared_dir, iplap_npz):
  """Our TFLite mesh against MediaPipe 0.10.21's (refined) points: the same
  crop boxes within a few pixels, landmarks within a few % of the crop."""
  tpl = dubber.template(shared_dir / "data" / TEMPLATE)
  fx = iplap_npz
  assert len(tpl) == 100 and tpl.found.all()
  assert np.abs(tpl.boxes - fx["frames/box_y1y2x1x2"]).max() <= 8
  want = np.concatenate([fx["frames/pose_landmarks"], fx["frames/content_landmarks"]], 2)
  err = np.abs(tpl.landmarks - want)
  assert err.mean() < 0.015 and np.percentile(err, 99) < 0.04 and err.max() < 0.08
  # Mouth openness orders the frames nearly the same way.
  assert np.corrcoef(tpl.openness, fx["frames/lip_dist"])[0, 1] > 0.8


# --------------------------------------------------------------------------
# The plan, resampling and gaps (no networks)


def _official_sequence(num_chunks: int, length: int) -> list[int]:
  """inference_single.py's input_frame_sequence."""
  seq = list(range(length))
  repeats = num_chunks // length + 1
  return (seq + list(reversed(seq))) * ((repeats + 1) // 2)


@pytest.mark.parametrize("chunks,length", [(69, 100), (69, 10), (30, 7), (12, 1),
                                           (200, 3)])
def test_plan_is_the_official_loop(chunks, length):
  plan = D.make_plan(chunks, length, 5)
  seq = _official_sequence(chunks, length)
  windows = list(range(0, chunks - 2))
  assert plan.num_windows == len(windows) and plan.num_frames == chunks
  for b in windows:
    frames = [j for j in range(b, b + 5)]
    if frames[-1] < len(seq):   # the official list can be one short (odd C, L=1)
      assert list(plan.frame_index[b]) == [seq[j] for j in frames]
    assert list(plan.mel_index[b]) == [max(0, j - 2) for j in frames]
  # Written frames: window 0 three times, then one per window.
  assert list(plan.output_window) == [0, 0] + windows


@pytest.mark.parametrize("chunks", [1, 2])
def test_speech_of_one_or_two_chunks_still_gives_its_frames(chunks):
  plan = D.make_plan(chunks, 4, 5)
  assert plan.num_windows == 1 and list(plan.output_window) == [0] * chunks
  assert plan.mel_index.max() == chunks - 1 and list(plan.frame_index[0]) == [0, 1, 2, 3, 3]


def test_resampling_to_25_fps():
  np.testing.assert_array_equal(D.resample_indices(10, 50.0, 25), [0, 2, 4, 6, 8])
  np.testing.assert_array_equal(D.resample_indices(4, 12.5, 25),
                                [0, 1, 1, 2, 2, 3, 3])
  np.testing.assert_array_equal(D.resample_indices(6, None, 25), np.arange(6))
  got = D.resample_indices(300, 30.0, 25)        # 10 s at 30 -> 250 frames
  assert len(got) == 250 and got[-1] == 299 and np.all(np.diff(got) >= 1)


def test_a_50_fps_video_is_read_at_25(tmp_path):
  # Frames of distinct flat greys survive H.264 well enough to be told apart.
  levels = np.arange(12) * 20 + 10
  frames = np.repeat(levels[:, None, None, None], 32, 1).repeat(32, 2).repeat(3, 3)
  path = media.write_video(tmp_path / "fast.mp4", frames.astype(np.uint8), 50.0)
  got, fps, n = D.read_template_frames(path, 25.0)
  assert fps == 50.0 and n == 12 and len(got) == 6
  np.testing.assert_allclose(got.mean(axis=(1, 2, 3)), levels[::2], atol=3)


def test_faceless_frames_are_interpolated_and_long_gaps_named(shared_dir):
  frames, _, _ = D.read_template_frames(shared_dir / "data" / CLIP)
  frames = frames[:12].copy()
  found_all = mesh_lib.FaceMesh()(frames)
  assert found_all.found.all()
  frames[4:7] = 0                         # three frames without a face
  mesh = mesh_lib.FaceMesh()
  tpl = D.make_template(frames, mesh=mesh, max_gap=3, where="clip.mp4")
  np.testing.assert_array_equal(tpl.interpolated, [4, 5, 6])
  truth = D.mesh131_of(found_all.points, frames.shape[1:3])
  # Interpolated points stay near the true ones (slow head motion).
  assert np.abs(tpl.mesh131[4:7] - truth[4:7]).max() * 256 < 8
  np.testing.assert_array_equal(tpl.mesh131[:4], truth[:4])
  # Output frames 4, 5, 6 show them (frames 0-2 show template frame 2).
  plan = D.make_plan(10, len(tpl), 5)
  np.testing.assert_array_equal(plan.output_template_frame, [2, 2, 2, 3, 4, 5, 6, 7, 8, 9])
  assert D.interpolated_output_frames(tpl, plan) == 3
  with pytest.raises(DataError, match=r"clip\.mp4: no face in frames 4-6"):
    D.make_template(frames, mesh=mesh, max_gap=2, where="clip.mp4")
  with pytest.raises(DataError, match="blank.mp4: no face found in any of its 12 frames"):
    D.make_template(np.zeros_like(frames), mesh=mesh, where="blank.mp4")


# --------------------------------------------------------------------------
# The command


def test_dub_command_on_a_clip_with_other_speech(model_dir, short_speech, shared_dir,
                                                 tmp_path, capsys):
  clip = shared_dir / "data" / CLIP
  out = tmp_path / "dubbed.mp4"
  rc = cli.main(["dub", "--checkpoint", str(model_dir), "--video", str(clip),
                 "--audio", str(short_speech), "--out", str(out), "--batch-size", "1",
                 "--side-by-side", "--no-progress"])
  captured = capsys.readouterr()
  assert rc == 0, captured.err
  samples = audio_io.read_speech(short_speech)
  chunks = len(mel_lib.mel_chunks(mel_lib.melspectrogram(audio_io.to_float(samples))))
  assert chunks == 3
  video, fps = media.read_video(out)
  assert fps == 25.0 and video.shape == (chunks, 256, 256, 3)
  # One frame per 40 ms mel chunk: the picture ends within the last chunk's
  # 200 ms window of the end of the speech; the sound is all there.
  assert 0 <= len(samples) / 16000 - chunks / 25 < 0.2
  sound = audio_io.read_speech(out)
  assert abs(len(sound) - len(samples)) < 1600
  # The frames outside the face are the template's (window 0 shows frame 2).
  template = media.read_frames(clip, [2])[0]
  assert np.abs(video[0][:, :20] - template[:, :20]).mean() < 0.02
  assert np.abs(video[0] - template).mean() > 0.01
  sbs, _ = media.read_video(tmp_path / "dubbed_side_by_side.mp4")
  assert sbs.shape == (chunks, 256, 768, 3)
  assert "3 output frames" in captured.err and "1 face rendered" in captured.out


@pytest.fixture(scope="module")
def still_image(tmp_path_factory, shared_dir) -> pathlib.Path:
  """A face photo of another size than the clips (300 high, 240 wide)."""
  import cv2
  frame = (media.read_frames(shared_dir / "data" / CLIP, [30])[0] * 255).astype(np.uint8)
  image = tmp_path_factory.mktemp("still") / "face.jpg"
  cv2.imwrite(str(image), cv2.resize(frame, (240, 300))[..., ::-1])
  return image


def test_a_still_image_is_a_one_frame_template(model_dir, short_speech, still_image,
                                               tmp_path):
  out = tmp_path / "still.npy"
  assert cli.main(["dub", "--checkpoint", str(model_dir), "--video", str(still_image),
                   "--audio", str(short_speech), "--out", str(out), "--batch-size",
                   "1", "--no-progress"]) == 0
  video = np.load(out)
  assert video.shape == (3, 300, 240, 3)
  np.testing.assert_array_equal(video[0], video[2])  # all from window 0


def test_errors_name_the_input(model_dir, short_speech, still_image, tmp_path, capsys):
  import cv2
  blank = tmp_path / "wall.png"
  cv2.imwrite(str(blank), np.full((200, 200, 3), 128, np.uint8))
  base = ["dub", "--checkpoint", str(model_dir), "--out", str(tmp_path / "o.mp4"),
          "--no-progress"]
  assert cli.main(base + ["--video", str(blank), "--audio", str(short_speech)]) == 2
  err = capsys.readouterr().err
  assert f"{blank}: no face found in any of its 1 frame" in err
  samples = audio_io.read_speech(short_speech)
  tiny = _write_wav(tmp_path / "tiny.wav", samples[:2999])
  assert cli.main(base + ["--video", str(still_image), "--audio", str(tiny)]) == 2
  err = capsys.readouterr().err
  assert f"{tiny}: 2999 samples" in err and "at least 3000 samples" in err


def test_a_checkpoint_that_does_not_match_is_named(model_dir, short_speech, still_image,
                                                   tmp_path, capsys):
  from dagan_jax import config as config_lib
  base = ["dub", "--video", str(still_image), "--audio", str(short_speech),
          "--out", str(tmp_path / "o.mp4"), "--no-progress"]
  # The config says a deeper landmark generator than the weights hold.
  other = tmp_path / "other"
  other.mkdir()
  (other / "variables").symlink_to(model_dir / "variables")
  text = (model_dir / "config.yaml").read_text()
  assert "nlayers: 2" in text
  (other / "config.yaml").write_text(text.replace("nlayers: 2", "nlayers: 3"))
  assert cli.main(base + ["--checkpoint", str(other)]) == 2
  err = capsys.readouterr().err
  assert str(other) in err and "ip_lap_landmark: missing" in err and "layers_2" in err
  # A DaGAN model directory (no IP_LAP section) is not an IP_LAP model.
  dagan = tmp_path / "dagan"
  dagan.mkdir()
  (dagan / "config.yaml").write_text(config_lib.to_yaml(config_lib.default_config()))
  assert cli.main(base + ["--checkpoint", str(dagan)]) == 2
  err = capsys.readouterr().err
  assert f"{dagan}: not an IP_LAP model" in err
