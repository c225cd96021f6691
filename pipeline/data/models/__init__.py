"""Learned pair-detector models: oscd-<band set>.txt (LightGBM) + .json sidecars."""
