"""Input: Grain pipelines, dataset layouts, TFDS builders, image/video IO.

Modules (import the one you need; this package imports nothing heavy):

``pipeline``
    ``make_pair_dataset`` (generator training: source/driving pairs) and
    ``make_depth_dataset`` (depth training: frames t-1, t, t+1), Grain
    ``IterDataset``s of dict batches; ``open_split``; evaluation readers
    ``reconstruction_videos`` and the pair-list functions.
``media``
    ``read_image``, ``read_video``, ``probe_video``, ``read_frames`` (decodes
    only the frames asked for), ``write_video`` (mp4, GIF, PNG folder, npy).
``clips``
    the ``vox`` and ``hdtf`` layouts, person keys, the cached clip index.
``augment``
    FOMM's flips and colour jitter from Grain's per-record rng.
``samplers``
    the Grain source and per-record samplers (what worker processes run).
``pairs``
    DaGAN's CSV pair lists (``read_pairs_csv``, ``write_pairs_csv``).
``tfds_builders``
    ``dagan_vox_frames`` / ``dagan_hdtf_frames`` ArrayRecord builders and
    their reader (no TensorFlow).
``check``, ``cli_data``
    ``dagan-jax data check`` and ``dagan-jax data build-tfds``.
``benchmark``
    records/s with 0 and 2 workers; start-up over a cached 100k-clip index.

Conventions: frames NHWC float32 in [0, 1] (uint8 inside the samplers until
the last step); user-caused problems raise ``dagan_jax.errors.DataError`` or
``ConfigError`` naming the file or key.
"""
