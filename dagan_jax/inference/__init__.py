"""Inference: animate a source face with a driving video.

* :mod:`.animate`: :class:`~.animate.Animator` (source state computed once,
  driving frames in fixed-size batches through one compiled program,
  relative / absolute motion, best-frame search), input reading with resize
  notices, output writing (mp4, PNG folder, npy) and the side-by-side view.
* :mod:`.cli_animate`: the ``dagan-jax animate`` command.

Import the submodules directly; this package imports nothing heavy itself.
"""
