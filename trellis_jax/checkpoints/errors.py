"""CheckpointError: every loader failure names the file and the problem (never a bare KeyError)."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint cannot be loaded: `path` is the offending file or directory, `problem` says why."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
