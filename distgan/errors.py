"""The families of errors a user can cause. The CLI prints each on one line and exits 2.

A message names the file, the field and the fix: ``jobs/x.yaml: optim.lr_g: expected a
positive number, got 'fast'``. Anything else that raises is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Base of every error caused by the user's input, not by a bug."""


class JobError(UserError):
    """A job file or a ``--set`` override is invalid."""


class DataError(UserError):
    """A dataset (source files, shards, manifest) cannot be read or is inconsistent."""


class CheckpointError(UserError):
    """A checkpoint or run directory cannot be used."""


class ClusterError(UserError):
    """Ray cannot run the job as asked (no cluster, too few resources)."""


class StorageError(UserError):
    """A storage location (a path or a URI such as s3://...) cannot be opened, read or written."""
