"""Guidance Lab core: the math of guided diffusion sampling.

Pure torch / numpy / safetensors. This package never imports ComfyUI (comfy, nodes,
folder_paths, server), so it can be used from diffusers or plain torch code as well.

Modules:
  parameterization  x = alpha*x0 + sigma*eps conversions (eps / v / flow), D <-> prediction spaces
  schedules         guidance-scale schedules, evaluated by sigma or by fraction of steps
  cfg               classifier-free guidance combiners and post-processing
"""
