"""Face geometry for the speech-driven systems.

* :mod:`.mesh`: the offline 468-point face mesh (BlazeFace + MediaPipe's
  mesh on ai-edge-litert; the ``face`` extra), batched, largest face.
* :mod:`.crop`: square crops from the mesh (VoxCeleb-style clip box, per
  frame boxes) and cutting them out.
* :mod:`.pose`: 6-DoF head pose by a rigid fit to a canonical head, in
  Audio2Head's camera (:mod:`dagan_jax.input.head_template` builds that
  head from our clips).
* :mod:`.ip_lap_landmarks`: IP_LAP's landmark subsets of the mesh, its
  sketches and template preprocessing.
"""
