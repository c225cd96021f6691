"""Training scripts for learned parts (reproducible, seeded; run as DVC stages)."""
