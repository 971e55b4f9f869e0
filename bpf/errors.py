"""Errors of the eBPF layer that callers without bcc can import and catch.

``BPFUnavailable`` is the one signal that the kernel side cannot run here (not root, no
kernel headers, bcc missing, a verifier or attach refusal). It carries the reason as bcc or
the kernel gave it, so the gateway can report it once and fall back to userspace.
"""

from __future__ import annotations


class BPFUnavailable(Exception):
    """The kernel side cannot load or attach; ``reason`` says why, in bcc's/kernel's words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
