"""ctscan: audit what a Certificate Authority issued, using Certificate Transparency."""

__version__ = "0.1.0"
