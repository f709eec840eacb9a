"""What the client and the probe inside the server share: the probe's route, the tiny random open_clip model,
the free-text inputs of the pack with the words that name them, and how a traceback is recognised."""

from __future__ import annotations

import re

from devkit import comfy_host

PROBE = "/gl_reliability"
CLIP_ARCH = "GLTinyCLIP-reliability"
TINY_CLIP = comfy_host.tiny_clip_config(layers=1)
CLIP_LABELS = ["a shoe", "a bag", "a shirt"]
DATA_LABELS = ["dark", "light"]
# An answer to a free-text input is: accepted; the pack's error (PACK_ERRORS) whose message names the field
# (FIELD_WORDS) or the value (clear); the pack's error without it (unclear); any other exception (unexpected).
PACK_ERRORS = ("GuidanceConfigError", "ClassifierFileError")
FIELD_WORDS = {
    "target": ("target",),
    "clip_target": ("target",),
    "keyframes": ("keyframes",),
    "clip_labels": ("label",),
    "dataset": ("dataset",),
    "output_name": ("output_name",),
    "pag_blocks": ("block",),
}
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\s*File \"[^\"]+\", line \d+", re.M)


def has_traceback(text: str) -> bool:
    """A Python traceback in an answer: its header or a frame line ('  File "...", line N'). Not the bare word: a
    fuzzed request may hold the word "Traceback" itself, which an error naming the bad value echoes."""
    return bool(TRACEBACK.search(text))
