"""Errors in the data or settings that a Python worker finds (a vector of the wrong size, a model path
that is no model): raised with this class so that the driver, which sees them only as the text of a
failed task, can report them as input problems (exit 2, the worker's one-line message) rather than as
unexpected failures."""


class WorkerInputError(ValueError):
    """The worker's input or settings cannot be used; the message names the row or setting."""
