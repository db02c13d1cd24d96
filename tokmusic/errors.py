"""The errors a user can cause. Each message names the file (or value) and the fix."""


class TokmusicError(Exception):
    """Base class of every error tokmusic raises for bad input, files or settings."""


class VideoError(TokmusicError):
    """A video cannot be read: missing, not a video, truncated, or without pictures."""


class AudioError(TokmusicError):
    """An audio file cannot be read or written."""


class CheckpointError(TokmusicError):
    """A pipeline or stage directory is missing, incomplete, incompatible or unsafe (a pickle)."""


class ConfigError(TokmusicError):
    """A setting or config file holds an unknown key or an impossible value."""


class DataError(TokmusicError):
    """A training manifest or data directory is malformed or made by another pipeline."""
