"""The public HTTP cache conformance suite (npm http-cache-tests, cache-tests.fyi)."""
