"""fmd: a fault manager for Linux and Xen hosts (illumos FMA semantics)."""

from __future__ import annotations

__version__ = "0.1.0"
