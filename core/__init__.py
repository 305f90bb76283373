"""Yidi core: the Cython index, eligibility (SPEC §4) and benefit (SPEC §5)."""
from .errors import InvariantError, LoadError, OperatingError, RequestError, YidiError
from ._core import ACCUMULATOR_KEYS, DEBUG, LIMITS, Index

__all__ = ["Index", "YidiError", "RequestError", "OperatingError", "InvariantError", "LoadError",
           "ACCUMULATOR_KEYS", "LIMITS", "DEBUG"]
