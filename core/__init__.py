"""Yidi core: the Cython index, eligibility (SPEC §4) and benefit (SPEC §5)."""
from .errors import LoadError, YidiError
from ._core import ACCUMULATOR_KEYS, LIMITS, Index

__all__ = ["Index", "YidiError", "LoadError", "ACCUMULATOR_KEYS", "LIMITS"]
