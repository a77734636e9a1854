"""bnn-serve: binary (1-bit) CNN inference on CPUs."""

__version__ = "0.1.0"
