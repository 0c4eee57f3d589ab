"""Test and benchmark support shipped with the package (reference implementations, fixtures)."""
