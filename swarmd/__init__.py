"""swarmd: a durable engine for AI agent swarms on Dapr workflows."""

__version__ = "0.1.0"
