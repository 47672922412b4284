"""Error types users see.

Every error rlx raises on bad input derives from `RlxError`, so the CLI can turn
any of them into one clear line and exit code 2, while genuine bugs (anything
else) still show a traceback.
"""


class RlxError(Exception):
    """Base of all errors caused by input: a graph, a file, an argument."""


class ShapeError(RlxError):
    """An op was given tensors whose shapes or dtypes it cannot combine."""


class AttributeSchemaError(RlxError):
    """An op attribute is missing, unknown or of the wrong type."""


class UnknownOpError(AttributeSchemaError, AttributeError):
    """An op name the registry does not know, asked of a `GraphBuilder` as a method.

    Also an AttributeError, so ``hasattr(builder, name)`` and ``getattr`` with a
    default treat it as a missing attribute instead of failing."""


class ParseError(RlxError):
    """The IR text is malformed; carries the line and column at fault."""

    def __init__(self, message: str, line: int, column: int, source: str = "<text>"):
        self.line = line
        self.column = column
        self.source = source
        super().__init__(f"{source}:{line}:{column}: {message}")


class VerifyError(RlxError):
    """A graph breaks an IR invariant (types, single definition, acyclicity, ...)."""


class CheckpointError(RlxError):
    """A weight file is unreadable, unsafe, or does not fit the model."""


class InputError(RlxError):
    """A runtime input (image, prompt, array) has the wrong shape, dtype or value."""


class ProfileError(RlxError):
    """A compile profile name or file is unknown or malformed."""


class CacheError(RlxError):
    """A kernel cache entry could not be written (reading falls back to a rebuild)."""
