"""TCP and UDP routing (arrives with the L4 issue)."""
