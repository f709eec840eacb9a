"""Guidance Lab: classifier(-free) guidance toolkit for ComfyUI. Entry point only."""

from comfy_api.latest import ComfyExtension, io

from .nodes import NODES, loadable

# Frontend extension (schedule plot, classifier label picker), served by ComfyUI.
WEB_DIRECTORY = "./web"


class GuidanceLabExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return loadable(NODES)  # a node whose schema raises is left out, not the rest


async def comfy_entrypoint() -> GuidanceLabExtension:
    return GuidanceLabExtension()
