"""Benchmarks (not tests): `python -m Testing.benchmarks.run_all`, or one module, e.g.
`python -m Testing.benchmarks.speed [--quick] [--device cpu|cuda]`. Results go to results/."""
