"""Closed-form references used to verify guidance (mixtures of Gaussians)."""
