"""User-facing errors.

Everything that a user can cause by giving bad input (a missing file, a
corrupt video, a checkpoint that does not fit the config, a NaN loss) raises a
subclass of :class:`DaganError` whose message names the offending thing and
says what was expected.  The command line prints the message without a
traceback and exits with status 2.
"""


class DaganError(Exception):
  """Base class of errors caused by input the user can fix."""


class ConfigError(DaganError):
  """A config value is missing, unknown or inconsistent."""


class CheckpointMismatchError(DaganError):
  """A checkpoint does not match the network built from the config."""


class DataError(DaganError):
  """A dataset, video or image is missing, unreadable or of the wrong shape."""


class NonFiniteLossError(DaganError):
  """A loss term became NaN or Inf during training."""
