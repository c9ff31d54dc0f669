"""The load benchmark (``python tests/bench/run.py``); no tests here, pytest collects nothing."""
