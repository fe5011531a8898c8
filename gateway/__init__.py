"""Privacy-preserving SQL gateway: a self-hosted data clean room."""

__version__ = "0.1.0"
