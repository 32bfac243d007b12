"""stratagem: an LLM learns, by reinforcement learning, to write programs that play games well."""

__version__ = "0.1.0"
