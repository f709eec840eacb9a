"""Guidance Lab: classifier(-free) guidance toolkit for ComfyUI. Entry point only."""
from comfy_api.latest import ComfyExtension, io

from .nodes import NODES

# Frontend extension (schedule plot, classifier label picker), served by ComfyUI.
WEB_DIRECTORY = "./web"


class GuidanceLabExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> GuidanceLabExtension:
    return GuidanceLabExtension()
