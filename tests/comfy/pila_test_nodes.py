"""Test-only ComfyUI nodes, copied into the test server's custom_nodes (never shipped with the pack).

PILATestConditioning: a seeded random [1, 512, 4096] CONDITIONING (no UMT5 needed).
PILATestCallCounter: an APPLY_MODEL wrapper from another "pack" that logs every model call's sigma.
PILATestCallLog: shows that log (ui text) after sampling.
PILATestShapeLog: an APPLY_MODEL wrapper that logs the channels of x and c_concat the model is called with.
PILATestClipVision: a seeded random CLIP_VISION_OUTPUT (penultimate states [1, tokens, 1280]; no CLIP vision model).
"""
import json

import torch

import comfy.patcher_extension

LOGS = {}


class PILATestConditioning:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
                             "tokens": ("INT", {"default": 12, "min": 1, "max": 512})}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"
    CATEGORY = "_for_testing/pila_tests"

    def make(self, seed, tokens):
        g = torch.Generator().manual_seed(seed)
        states = torch.zeros(1, 512, 4096)
        states[:, :tokens] = torch.randn(1, tokens, 4096, generator=g)
        return ([[states, {}]],)


class _ModelCallLogger:
    """A test "pack" that clones a MODEL and adds an APPLY_MODEL wrapper appending `entry(x, t, c_concat)` of every
    model call to LOGS[name]."""
    KEY, DEFAULT = "", ""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "name": ("STRING", {"default": cls.DEFAULT})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = "_for_testing/pila_tests"

    @staticmethod
    def entry(x, t, c_concat):
        raise NotImplementedError

    def patch(self, model, name):
        log = LOGS.setdefault(name, [])
        log.clear()

        def wrapper(executor, x, t, c_concat, *args, **kwargs):
            log.append(self.entry(x, t, c_concat))
            return executor(x, t, c_concat, *args, **kwargs)

        m = model.clone()
        m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, self.KEY, wrapper)
        return (m,)


class PILATestCallCounter(_ModelCallLogger):
    KEY, DEFAULT = "pila_test.counter", "counter"

    @staticmethod
    def entry(x, t, c_concat):
        return [float(s) for s in t.flatten()]


class PILATestCallLog:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "name": ("STRING", {"default": "counter"})}}

    RETURN_TYPES = ()
    FUNCTION = "show"
    OUTPUT_NODE = True
    CATEGORY = "_for_testing/pila_tests"

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")

    def show(self, samples, name):
        return {"ui": {"text": [json.dumps(LOGS.get(name, []))]}}


class PILATestShapeLog(_ModelCallLogger):
    KEY, DEFAULT = "pila_test.shapes", "shapes"

    @staticmethod
    def entry(x, t, c_concat):
        return [int(x.shape[1]), None if c_concat is None else int(c_concat.shape[1])]


class _ClipVisionOutput:
    def __init__(self, states):
        self.penultimate_hidden_states = states
        self.image_embeds = states[:, 0]
        self.last_hidden_state = states


class PILATestClipVision:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
                             "tokens": ("INT", {"default": 257, "min": 1, "max": 1024})}}

    RETURN_TYPES = ("CLIP_VISION_OUTPUT",)
    FUNCTION = "make"
    CATEGORY = "_for_testing/pila_tests"

    def make(self, seed, tokens):
        g = torch.Generator().manual_seed(seed)
        return (_ClipVisionOutput(torch.randn(1, tokens, 1280, generator=g)),)


NODE_CLASS_MAPPINGS = {"PILATestShapeLog": PILATestShapeLog, "PILATestClipVision": PILATestClipVision,
                       "PILATestConditioning": PILATestConditioning, "PILATestCallCounter": PILATestCallCounter,
                       "PILATestCallLog": PILATestCallLog}


class PILATestLatentToImage:
    """A VAE stand-in for tests: latent channels 0-2 through a sigmoid, each latent pixel as a 4x4 block."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "decode"
    CATEGORY = "_for_testing/pila_tests"

    def decode(self, samples):
        x = samples["samples"][0, :3].float()                      # [3, T, H, W]
        img = torch.sigmoid(x).permute(1, 2, 3, 0)                  # [T, H, W, 3]
        return (img.repeat_interleave(4, 1).repeat_interleave(4, 2).contiguous(),)


NODE_CLASS_MAPPINGS["PILATestLatentToImage"] = PILATestLatentToImage
