"""Generated gRPC stubs live under here (built by setup.py, not committed)."""
