"""Integration tests: real gunicorn (two workers) in front of a real loopback origin."""
