"""Classifiers for guidance: the noise-aware latent classifier (noise_aware) and the zero-shot CLIP
classifier of the denoised prediction (clip)."""
