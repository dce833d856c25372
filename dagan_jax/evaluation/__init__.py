"""Evaluation: metrics, landmark / identity plug-ins, protocols and reports.

* :mod:`.metrics`: per-frame metrics on ``(T, H, W, 3)`` stacks (L1, PSNR,
  SSIM in two conventions, LPIPS, AKD, AED, CSIM, DaGAN++ TCM).
* :mod:`.face_models`: ``load_landmark_model`` / ``load_identity_model``.
* :mod:`.pairs`: DaGAN CSV pair lists.
* :mod:`.evaluator`: ``evaluate_reconstruction``, ``evaluate_pairs``,
  ``write_report``.

Import the submodules directly; this package imports nothing heavy itself.
"""
