"""shardstream: a streaming API gateway for sharded REST applications."""

__version__ = "0.1.0"
