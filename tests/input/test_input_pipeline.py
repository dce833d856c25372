"""pipeline.py: pair and depth datasets, id sampling, determinism, resume,
host shards, augmentation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from dagan_jax.errors import ConfigError
from dagan_jax.input import pipeline
from dagan_jax.input.augment import Augmenter, jitter_frame
from input_helpers import NO_AUG, make_folder_clip, params_for

ONE_HOST = {"process_index": 0, "process_count": 1}


def take(ds_or_it, n):
  it = iter(ds_or_it) if not hasattr(ds_or_it, "get_state") else ds_or_it
  return [next(it) for _ in range(n)]


def assert_same(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_pairs_from_mp4_files_and_frame_folders(small_vox, tmp_path):
  params = params_for(small_vox, tmp_path)
  ds = pipeline.make_pair_dataset(params, seed=0, batch_size=3, num_repeats=2,
                                  **ONE_HOST)
  for batch in take(ds, 3):
    assert set(batch) == {"source", "driving", "skipped"}
    assert batch["source"].shape == batch["driving"].shape == (3, 256, 256, 3)
    assert batch["source"].dtype == np.float32
    assert batch["skipped"].shape == (3,) and batch["skipped"].dtype == np.int32
    assert batch["skipped"].sum() == 0
    assert 0.0 <= batch["source"].min() and batch["driving"].max() <= 1.0
    assert batch["source"].std() > 0.05


def test_hdtf_pairs_and_explicit_resize(hdtf_root, tmp_path):
  params = params_for(hdtf_root, tmp_path, layout="hdtf")
  batch = take(pipeline.make_pair_dataset(params, seed=1, batch_size=2,
                                          num_repeats=1, **ONE_HOST), 1)[0]
  assert batch["source"].shape == (2, 512, 512, 3)
  small = dict(params, frame_shape=[256, 256, 3], resize_frames=True)
  batch = take(pipeline.make_pair_dataset(small, seed=1, batch_size=2,
                                          num_repeats=1, **ONE_HOST), 1)[0]
  assert batch["driving"].shape == (2, 256, 256, 3)


@pytest.fixture
def coded_root(tmp_path):
  """Persons A (one clip) and B (three clips); frame i of clip k of person p
  is solid grey ``code(p, k) + i``: the pixels tell which clip and frame."""
  root = tmp_path / "coded"
  make_folder_clip(root / "train" / "idA#v0#0#8.mp4", [10 + i for i in range(8)])
  for k in range(3):
    make_folder_clip(root / "train" / f"idB#v{k}#0#8.mp4",
                     [100 + 40 * k + i for i in range(8)])
  return root


def clip_of(value):
  return "A" if value < 100 else f"B{(value - 100) // 40}"


def test_id_sampling_draws_a_person_first(coded_root, tmp_path):
  seen = {}
  for id_sampling in (True, False):
    params = params_for(coded_root, tmp_path, frame_shape=[16, 16, 3],
                        augmentation_params=NO_AUG, id_sampling=id_sampling)
    batches = take(pipeline.make_pair_dataset(
        params, seed=3, batch_size=50, num_repeats=25, **ONE_HOST), 8)
    values = np.concatenate([b["source"][:, 0, 0, 0] for b in batches])
    clips_ = [clip_of(int(round(v * 255))) for v in values]
    seen[id_sampling] = np.mean([c == "A" for c in clips_])
    # FOMM's pair order: source frame <= driving frame before augmentation.
    for b in batches:
      assert np.all(b["source"][:, 0, 0, 0] <= b["driving"][:, 0, 0, 0])
      assert np.all(np.abs(b["source"][:, 0, 0, 0] - b["driving"][:, 0, 0, 0]) < 8 / 255 + 1e-6)
  assert abs(seen[True] - 0.5) < 0.08   # person A half the time
  assert abs(seen[False] - 0.25) < 0.08  # one clip in four


def test_depth_triplets_are_consecutive(coded_root, tmp_path):
  params = params_for(coded_root, tmp_path, frame_shape=[16, 16, 3],
                      augmentation_params=NO_AUG)
  batch = take(pipeline.make_depth_dataset(params, seed=0, batch_size=16,
                                           num_repeats=8, **ONE_HOST), 1)[0]
  assert batch["frames"].shape == batch["frames_aug"].shape == (16, 3, 16, 16, 3)
  v = np.round(batch["frames"][:, :, 0, 0, 0] * 255)
  np.testing.assert_array_equal(np.diff(v, axis=1), 1.0)
  # With FOMM's flips a triplet may be reversed in time but stays consecutive.
  params = params_for(coded_root, tmp_path, frame_shape=[16, 16, 3])
  batch = take(pipeline.make_depth_dataset(params, seed=0, batch_size=32,
                                           num_repeats=8, **ONE_HOST), 1)[0]
  d = np.diff(np.round(batch["frames"][:, :, 8, 8, 0] * 255), axis=1)
  assert np.all(np.abs(d) == 1) and np.all(d[:, 0] == d[:, 1])
  assert set(d[:, 0]) == {-1.0, 1.0}


def test_deterministic_given_the_seed(small_vox, tmp_path):
  params = params_for(small_vox, tmp_path)
  make = lambda seed: pipeline.make_pair_dataset(
      params, seed=seed, batch_size=2, num_repeats=3, **ONE_HOST)
  a, b, c = take(make(5), 3), take(make(5), 3), take(make(6), 3)
  for x, y in zip(a, b):
    assert_same(x, y)
  assert not np.array_equal(a[0]["source"], c[0]["source"])


def test_iterator_state_resumes_the_exact_stream(coded_root, tmp_path):
  params = params_for(coded_root, tmp_path, frame_shape=[16, 16, 3])
  ds = pipeline.make_pair_dataset(params, seed=0, batch_size=4, num_repeats=2,
                                  **ONE_HOST)
  it = iter(ds)
  take(it, 3)
  state = it.get_state()
  expected = take(it, 4)
  resumed = iter(pipeline.make_pair_dataset(params, seed=0, batch_size=4,
                                            num_repeats=2, **ONE_HOST))
  resumed.set_state(state)
  for x, y in zip(expected, take(resumed, 4)):
    assert_same(x, y)


def test_epochs_and_num_repeats(coded_root, tmp_path):
  params = params_for(coded_root, tmp_path, frame_shape=[16, 16, 3],
                      id_sampling=False)
  ds = pipeline.build_record_dataset(params, seed=0, num_repeats=3,
                                     num_epochs=2, **ONE_HOST)
  assert len(ds) == 2 * 3 * 4
  ds = pipeline.make_pair_dataset(params, seed=0, batch_size=5, num_repeats=3,
                                  num_epochs=1, **ONE_HOST)
  assert len(list(ds)) == 12 // 5  # drop_remainder


def test_host_shards_are_disjoint(tmp_path):
  root = tmp_path / "persons"
  for p in range(6):
    make_folder_clip(root / "train" / f"id{p}#v#0#2.mp4", [20 * p + 1, 20 * p + 2])
  params = params_for(root, tmp_path, frame_shape=[16, 16, 3],
                      augmentation_params=NO_AUG)
  seen = []
  for host in range(2):
    batches = take(pipeline.make_pair_dataset(
        params, seed=0, batch_size=6, num_repeats=4, process_index=host,
        process_count=2), 4)
    values = np.concatenate([b["source"][:, 0, 0, 0] for b in batches])
    seen.append({int(round(v * 255)) // 20 for v in values})
  assert seen[0].isdisjoint(seen[1])
  assert seen[0] | seen[1] == set(range(6))
  assert len(seen[0]) == len(seen[1]) == 3
  with pytest.raises(Exception, match="6 persons but there are 7 hosts"):
    pipeline.make_pair_dataset(params, seed=0, batch_size=1, num_repeats=1,
                               process_index=0, process_count=7)


# ------------------------------------------------------------------ augment


def test_augmentation_is_the_same_for_every_frame():
  rng = np.random.default_rng(0)
  frame = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
  aug = Augmenter({"flip_param": {"horizontal_flip": True, "time_flip": True},
                   "jitter_param": {"brightness": 0.1, "contrast": 0.1,
                                    "saturation": 0.1, "hue": 0.1}})
  for seed in range(20):
    out = aug([frame, frame.copy(), frame.copy()], np.random.default_rng(seed))
    assert all(np.array_equal(out[0], o) for o in out[1:])
    assert out[0].dtype == np.uint8 and out[0].shape == frame.shape


def test_flip_probabilities_follow_fomm():
  aug = Augmenter({"flip_param": {"horizontal_flip": True, "time_flip": True}})
  rng = np.random.default_rng(1)
  draws = [aug.draw(rng) for _ in range(4000)]
  tf = np.mean([d["time_flip"] for d in draws])
  hf = np.mean([d["horizontal_flip"] for d in draws])
  assert abs(tf - 0.5) < 0.03 and abs(hf - 0.25) < 0.03
  assert not any(d["time_flip"] and d["horizontal_flip"] for d in draws)
  a, b = np.zeros((2, 3, 3), np.uint8), np.ones((2, 3, 3), np.uint8)
  a[0, 0] = 9
  out = Augmenter.apply([a, b], {"time_flip": True, "horizontal_flip": False,
                                 "jitter": []})
  assert out[0] is b
  out = Augmenter.apply([a], {"time_flip": False, "horizontal_flip": True,
                              "jitter": []})
  assert out[0][0, 2, 0] == 9


def test_jitter_ranges_and_formulas():
  aug = Augmenter({"jitter_param": {"brightness": 0.1, "contrast": 0.1,
                                    "saturation": 0.1, "hue": 0.1}})
  rng = np.random.default_rng(2)
  for _ in range(200):
    ops = dict(aug.draw_jitter(rng))
    assert set(ops) == {"brightness", "contrast", "saturation", "hue"}
    for k in ("brightness", "contrast", "saturation"):
      assert 0.9 <= ops[k] <= 1.1
    assert -0.1 <= ops["hue"] <= 0.1
  img = np.random.default_rng(3).integers(0, 256, (8, 8, 3), dtype=np.uint8)
  # Brightness blends with black: x * f, rounded, clipped.
  got = jitter_frame(img, [("brightness", 1.08)]).astype(int)
  assert np.abs(got - np.clip(img * 1.08, 0, 255)).max() <= 1
  # Saturation 0 leaves the luma (ITU-R 601) in every channel.
  grey = jitter_frame(img, [("saturation", 0.0)]).astype(int)
  luma = img @ np.array([0.299, 0.587, 0.114])
  assert np.abs(grey[..., 0] - luma).max() <= 1
  assert np.array_equal(grey[..., 0], grey[..., 2])
  # Hue leaves grey pixels alone.
  flat = np.full((4, 4, 3), 77, np.uint8)
  assert np.array_equal(jitter_frame(flat, [("hue", 0.1)]), flat)


def test_unsupported_augmentation_is_a_config_error():
  with pytest.raises(ConfigError, match="rotation_param"):
    Augmenter({"rotation_param": {"degrees": 10}})
  with pytest.raises(ConfigError, match="jitter_param.hue"):
    Augmenter({"jitter_param": {"hue": 0.7}})
  with pytest.raises(ConfigError, match="frame_shape"):
    pipeline.make_pair_dataset({"root_dir": "/x", "frame_shape": [8, 8]},
                               seed=0, batch_size=1, num_repeats=1, **ONE_HOST)
  with pytest.raises(ConfigError, match="root_dir is empty"):
    pipeline.make_pair_dataset({"root_dir": ""}, seed=0, batch_size=1,
                               num_repeats=1, **ONE_HOST)


def test_config_dict_dataset_params(small_vox, tmp_path):
  from dagan_jax import config
  cfg = config.default_config()
  dp = cfg.dataset_params
  with dp.unlocked():
    dp.root_dir = str(small_vox)
    dp.cache_dir = str(tmp_path)
  # Host placement from jax (one process here).
  batch = take(pipeline.make_pair_dataset(dp, seed=0, batch_size=1,
                                          num_repeats=1), 1)[0]
  assert batch["source"].shape == (1, 256, 256, 3)
  assert list(itertools.islice(pipeline.param(dp, "frame_shape"), 3)) == [256, 256, 3]
