"""Realistic synthetic national reference data (SPEC §3) for Yidi."""

from .generator import AS_OF, DEMO_FILINGS, DEMO_PERSONS, FAMOUS_HOSPITALS, generate

__all__ = ["generate", "AS_OF", "DEMO_PERSONS", "DEMO_FILINGS", "FAMOUS_HOSPITALS"]
