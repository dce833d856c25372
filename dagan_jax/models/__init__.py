"""DaGAN / DaGAN++ networks in flax.linen (NHWC, dict outputs, official names).

* ``layers``: PyTorch-exact building blocks (Conv2d, BatchNorm, SNConv2d,
  InstanceNorm, FOMM's Same/Down/Up/Res blocks, Encoder/Decoder/Hourglass).
* ``depth``: monodepth2 ResnetEncoder (18/50) and DepthDecoder (``disp{s}``).
* ``pose``: Face-Depth-Network pose encoder / decoder with learned intrinsics.
* ``keypoint_detector``: KPDetector on RGB + depth.
* ``dense_motion``: DenseMotionNetwork.
* ``generator``: DepthAwareGenerator, SPADEDepthAwareGenerator.
* ``discriminator``: MultiScaleDiscriminator.
* ``build``: ``build_models(config)``, ``init_variables``, pure forward
  functions (``depth_fn``, ``keypoints_fn``, ``generate_fn``,
  ``discriminate_fn``), ``param_counts``.

Train / eval: a network is in training mode when ``'batch_stats'`` is
mutable in its ``apply`` (see ``layers``).
"""
