"""Errors a user can fix: the CLI turns them into a short message and exit code 2."""


class UserError(Exception):
    """Base for problems in the config or the input data (exit code 2, no traceback)."""


class ConfigError(UserError):
    """The run config is invalid: unknown key, wrong type, value out of range, missing variable."""


class InputError(UserError):
    """An input source cannot be used: missing path, missing column, wrong column type, nothing left."""


class UnknownCommandError(UserError):
    """A command that is not one of segrec's stages (or run)."""
