"""The error for a bad setting, below every module that checks one (the config and the teacher kinds).

``rkd.config`` exports it too; the command line prints its one-line message instead of a traceback.
"""


class ConfigError(ValueError):
    """A configuration value is unknown, malformed or out of range; the message names the field and the fix."""
