"""Guidance Lab: classifier(-free) guidance toolkit for ComfyUI. Entry point only."""
from comfy_api.latest import ComfyExtension, io

from .nodes import NODES


class GuidanceLabExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> GuidanceLabExtension:
    return GuidanceLabExtension()
