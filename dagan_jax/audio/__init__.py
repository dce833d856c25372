"""Speech for the audio-driven systems (Audio2Head, IP_LAP).

* :mod:`.io`: read the speech of any audio or video file as 16 kHz mono
  PCM (PyAV), with clear errors for files without usable sound.
* :mod:`.speech_features`: Audio2Head's 41 values per 10 ms (MFCC, log
  filterbank, pitch, voicing), written here after python_speech_features'
  and WORLD's conventions.
* :mod:`.pitch`: the pitch trackers those features may use.
* :mod:`.mel`: IP_LAP's (Wav2Lip's) 80-band log-mel spectrogram and its
  16-step chunk per video frame.
* :mod:`.align`: which audio rows belong to which video frame, at any fps.
* :mod:`.sources`: where a clip's sound is (sidecar or own stream) and
  whether its length fits the picture.
* :mod:`.sync`: a clip's audio-visual offset, mouth opening against
  speech energy.
"""
