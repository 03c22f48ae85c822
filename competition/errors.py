"""The toolkit's user-facing errors: the CLI prints their message as one line and exits non-zero."""


class CompetitionError(Exception):
    """Base of every error caused by the user's input rather than by a bug."""


class ConfigError(CompetitionError):
    """A config file, key or value is wrong."""


class DataError(CompetitionError):
    """A competition table or image is missing or malformed."""


class WorkerError(CompetitionError):
    """A worker process of a multi-process stage failed (its own error is printed above)."""
