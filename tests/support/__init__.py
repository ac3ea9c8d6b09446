"""Helpers for the test suite and the benchmarks, kept out of the shipped packages.

`tests` is a namespace package on the repository root (pytest's `pythonpath = ["."]`; the
benchmarks put the root on `sys.path` themselves), so these import as `tests.support.<module>`:
`daemon` runs a real `vortexd serve` subprocess, `slots` renders and judges slots without
publishing, `flux` and `clip` build tiny random-weight model folders in the official layouts.
"""
