"""Sluice: a Traefik-style L7 gateway over an eBPF L3/L4 layer."""

__version__ = "0.1.0"
