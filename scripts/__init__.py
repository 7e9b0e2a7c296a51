"""Benchmarks, the demo and the fuzzing harness: run each from the repository root
as ``python -m scripts.<name>``, so that it can import the test-support library
``tests``."""
