"""distinfer's release number (also in pyproject.toml), importable from any floor without the package face."""
__version__ = "0.1.0"
