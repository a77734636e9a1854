"""Benchmarks and measured reports; bench.harness is the reliability harness tests/reliability shares."""
