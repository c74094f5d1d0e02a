"""The threaded baseline of make bench-shadow (baseline.py)."""
