"""Face geometry for the speech-driven systems: IP_LAP's landmark subsets
of MediaPipe's 468-point face mesh, the sketches drawn from them, and its
template preprocessing (crops, crop-normalised landmarks, reference
frames by mouth openness): :mod:`.ip_lap_landmarks`."""
