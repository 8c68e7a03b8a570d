"""Benchmarks: streamproxy against its peers on one stand-in S3 sink (``python -m bench``)."""
