"""Guidance Lab core: the math of guided diffusion sampling.

Pure torch / numpy / safetensors / PIL. This package never imports ComfyUI (comfy, nodes,
folder_paths, server), so it can be used from diffusers or plain torch code as well.
tests/test_structure.py holds this list equal to the package's modules and checks that no module of the core
imports ComfyUI.

Modules:
  parameterization     x = alpha*x0 + sigma*eps conversions (eps / v / flow), D <-> prediction spaces; per_sample
  schedules            guidance-scale schedules, evaluated by sigma or by fraction of steps; the sigma window
  preview              the sigmas of the frontend's schedule plot (a typical run without a model)
  cfg                  classifier-free guidance combiners, extra terms and post-processing
  guidance_filters     reshapers of the guidance step: TCFG, FreSca, FDG, MaMBo-G, dynamic thresholding
  perturbed_terms      perturbed-self terms: PAG, SEG, skip-layer guidance (the math; the patches are in nodes/)
  nag                  normalized attention guidance: NAG on attention outputs, its two forms' settings
  classifier_guidance  classifier guidance D' = D + s * sigma^2 / alpha * grad log p(y | x, sigma); targets
  classifiers          the noise-aware latent classifier (classifiers.noise_aware), its file format: safetensors
                       weights + JSON metadata, never pickle (classifiers.classifier_files), and zero-shot CLIP
                       (classifiers.clip)
  datasets             labeled image folders and the latent cache
  classifier_training  training of noise-aware classifiers (Trainer, TrainConfig)
  train                the command-line trainer on a latent cache (python -m guidance_core.train)
  files                atomic writes; the safetensors check that refuses pickled checkpoints before they are opened
  report               the training report chart (PNG)
  errors               GuidanceConfigError: every message names the field, the value and what is accepted
  reference            exact references for tests: the Gaussian mixture's denoiser and class posterior
"""
