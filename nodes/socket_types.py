"""Custom socket types of the pack."""

from comfy_api.latest import io

Schedule = io.Custom("GUIDANCE_SCHEDULE")
Terms = io.Custom("GUIDANCE_TERMS")
PostProcess = io.Custom("GUIDANCE_POST")
Classifier = io.Custom("GUIDANCE_CLASSIFIER")
