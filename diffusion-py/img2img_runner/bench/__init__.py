"""Benchmark-only code (bench/gpu and its tests): the serving path never imports it (.importlinter)."""
