"""Tools the tests and the benchmarks share: a browser harness, old code to compare against, report writing."""
