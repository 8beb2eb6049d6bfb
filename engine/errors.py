"""Every error class the engine raises (all exported by `engine`). Each message names the file
or argument at fault, fits on one line, and says what to do where there is something to do."""


class GLBError(Exception):
    """Base of every error GeoLangBind reports to a user (CLI exit status 2, UI message)."""


class InputError(GLBError, ValueError):
    """A bad argument: bbox, k, text, wavelengths, modality, dates, filters."""


class RasterError(GLBError):
    """A file that cannot be read as imagery: corrupt, empty, no CRS, unsupported dtype."""


class UnknownSensorError(GLBError):
    """The band layout of a file cannot be told from its metadata; an explicit flag is needed."""


class IndexNotFoundError(GLBError, FileNotFoundError):
    """No index at the given path."""


class IndexLockedError(GLBError):
    """Another writer holds the index lock."""


class CheckpointError(GLBError):
    """A checkpoint that is missing or does not match the architecture."""


class IndexWriteError(GLBError):
    """The index cannot be written (read-only, disk full, not a folder); what is published
    is unchanged."""


class CorruptIndexError(GLBError):
    """An index whose files contradict each other or cannot be read; `glb check` says where."""


class EncoderMismatchError(GLBError):
    """An index built with another encoder (or store format) than the one writing to it."""
