"""Data sources: MLLMU-Bench-layout loading, contrast files and the items they yield."""
