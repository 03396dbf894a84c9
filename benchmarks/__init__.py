"""Benchmarks of the training step and of the search service; see BENCHMARKS.md."""
