"""Security tests: authorization, unsafe weights, rate limits, API fuzzing."""
