"""Generators of synthetic SN7-format data (folder layout, images, labels, exact truth masks) for
tests and benchmarks.

Nothing in sn7 imports this package; only tests/ and benchmarks/ do. It may import sn7.data and
sn7.utils (floor 1).
"""
