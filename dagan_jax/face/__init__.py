"""Face geometry for the speech-driven systems: IP_LAP's landmark subsets
of MediaPipe's 468-point face mesh and the sketches drawn from them
(:mod:`.ip_lap_landmarks`)."""
