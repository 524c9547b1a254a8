"""keysentry benchmarks: ``python -m benchmarks`` (see run.py). Ratios, measured side by side."""
