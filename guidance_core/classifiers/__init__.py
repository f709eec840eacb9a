"""Noise-aware classifier networks (and, later, the CLIP zero-shot classifier)."""
