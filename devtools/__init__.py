"""Tools the tests and the benchmarks share: a browser harness and old code to compare against."""
