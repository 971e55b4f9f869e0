"""eBPF programs and their loaders (arrives with the eBPF issue)."""
