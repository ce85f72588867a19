"""deepleak: measure how much a federated-learning client leaks through what it shares."""

__version__ = "0.1.0"
