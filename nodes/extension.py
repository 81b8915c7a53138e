"""The V3 extension object ComfyUI asks the pack's `comfy_entrypoint()` for."""
from __future__ import annotations

from typing_extensions import override

from comfy_api.latest import ComfyExtension, io

from .common import register_model_folder
from .correction import PILAFlowCorrection
from .labels import PILAPhysicsLabelParser
from .loader import PILAAdapterLoader
from .maps import PILAExpertMaps
from .router import PILAExpertRouter
from .sampler import PILAFlowCorrectionSampler, PILAFlowCorrectionSamplerWan22

NODES = [PILAAdapterLoader, PILAPhysicsLabelParser, PILAExpertRouter, PILAFlowCorrection, PILAFlowCorrectionSampler,
         PILAFlowCorrectionSamplerWan22, PILAExpertMaps]

register_model_folder()


class PILAExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)
