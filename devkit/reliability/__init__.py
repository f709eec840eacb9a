"""Reliability of Guidance Lab in a real ComfyUI server: soak, interrupts, files changed under the server, hostile
requests, determinism. `python -m scripts.reliability` runs it (full form: docs/RELIABILITY.md; `--quick`: the CI
slice that tests/test_reliability.py runs). Not shipped (devkit/ is in .comfyignore).

  common      names both sides share: the probe's route, the tiny CLIP, the free-text inputs, traceback detection
  probe       runs inside the server (linked into its custom_nodes as gl_reliability_probe.py): memory, models
              held and what is attached to them, weight fingerprints, the pack's check of each free-text input,
              an audit of the files the server opens; a tiny random VAE node
  client      the base directory the servers run in (Env) and the dev kit's server client with the probe's routes
  prompts     the prompts: every toy example workflow and prompts that together use every node of the pack
  runtime     checks 1 and 5: the soak and determinism (the fresh server's reference outputs, a restart)
  interrupts  check 2: interrupts at a random step
  faults      check 3: classifier and CLIP files changed under the server
  hostile     check 4: hypothesis fuzzing of the routes and of every free-text input
  report      pass / fail per check and docs/RELIABILITY.md
  run         the whole run (two servers), check 4 alone, the command line

The package's __init__ imports nothing: the probe, loaded by ComfyUI, imports `common` alone.
"""
