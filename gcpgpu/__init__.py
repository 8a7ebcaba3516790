"""gcpgpu: provision GPU clusters on Google Cloud and configure their nodes."""
from gcpgpu.plugins import hookimpl

__all__ = ["hookimpl"]
