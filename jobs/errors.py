"""Errors with a message for people: the CLI prints it without a traceback.

UserError and its kinds are problems the user can fix in the config or the data (exit code 2);
StageFailure is work that failed outside them, where re-running is the remedy (exit code 1).
"""


class UserError(Exception):
    """Base for problems in the config or the input data (exit code 2, no traceback)."""


class ConfigError(UserError):
    """The run config is invalid: unknown key, wrong type, value out of range, missing variable."""


class InputError(UserError):
    """An input source cannot be used: missing path, missing column, wrong column type, nothing left."""


class UnknownCommandError(UserError):
    """A command that is not one of segrec's stages (or run)."""


class StageFailure(Exception):
    """A stage's work failed outside the config and the data (a training process killed, an executor
    lost): exit code 1 with what happened and what to do; the traceback only with --debug."""
