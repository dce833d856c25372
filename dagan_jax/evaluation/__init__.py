"""Evaluation: metrics, landmark / identity plug-ins, protocols and reports.

* :mod:`.metrics`: per-frame metrics on ``(T, H, W, 3)`` stacks (L1, PSNR,
  SSIM in two conventions, LPIPS, AKD, AED, CSIM, DaGAN++ TCM).
* :mod:`.face_models`: ``load_landmark_model`` / ``load_identity_model``.
* :mod:`.pairs`: DaGAN CSV pair lists (read with
  :func:`dagan_jax.input.pairs.read_pairs_csv`).
* :mod:`.evaluator`: ``evaluate_reconstruction``, ``evaluate_pairs``,
  ``write_report``.
* :mod:`.speech`: the ``speech`` protocol (Audio2Head's ``Speaker``);
  :mod:`.dubbing`: the ``dubbing`` protocol (IP_LAP's ``Dubber``).
* :mod:`.fid`: FID from pytorch-fid's local Inception file;
  :mod:`.syncnet`: LSE-C / LSE-D from SyncNet's local weights (both
  networks in ``models/``, their converters in ``convert/``).
* :mod:`.cli_evaluate`: the ``dagan-jax evaluate`` command and
  :func:`~.cli_evaluate.evaluate`, the protocols run with a checkpoint
  (an :class:`~dagan_jax.inference.animate.Animator`).

Import the submodules directly; this package imports nothing heavy itself.
"""
