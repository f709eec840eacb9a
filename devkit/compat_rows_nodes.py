"""Compatibility rows of ComfyUI's own nodes with Guidance Lab's (devkit/compat_matrix.py): its guidance nodes chained
before and after the patch and before the guider, its guiders, the nodes that touch the same step (0.33's and DiT
ones), model terms by how the weak model is made, conditioning features, and perturbed attention chained with SAG."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile

import torch

from . import comfy_host as H
from .cfg_helpers import EMPTY, NEG, OTHER, POS, custom_sample, ksample, native_guider, patch
from .compat_doc import CONDITIONING, NODES, TOL
from .compat_measure import (
    CFG,
    GUIDER,
    PATCH,
    constant,
    eps_model,
    float64,
    guided,
    image_latent,
    measure,
    native,
    right_half_mask,
    row,
    settings,
)

# ------------------------------------------------------------------ ComfyUI's guidance nodes
NODE_INPUTS = {
    "RescaleCFG": dict(multiplier=0.7),
    "CFGNorm": dict(strength=1.0),
    "APG": dict(eta=1.0, norm_threshold=5.0, momentum=-0.5),
    "TCFG": {},
    "Mahiro": {},
    "CFGZeroStar": {},
    "PerpNeg": dict(empty_conditioning=EMPTY, neg_scale=1.0),
    "SelfAttentionGuidance": dict(scale=0.5, blur_sigma=2.0),
    "PerturbedAttentionGuidance": dict(scale=3.0),
    "SkipLayerGuidanceSD3": dict(layers="0, 1", scale=3.0, start_percent=0.0, end_percent=1.0),
    "SkipLayerGuidanceDiT": dict(
        double_layers="0, 1", single_layers="0, 1", scale=3.0, start_percent=0.0, end_percent=1.0, rescaling_scale=0.0
    ),
    "SkipLayerGuidanceDiTSimple": dict(double_layers="0, 1", single_layers="0, 1", start_percent=0.0, end_percent=1.0),
    "DifferentialDiffusion": dict(strength=1.0),
}
NO_EFFECT = {  # why a node cannot act on ComfyUI's UNet (checked: its output equals the model's without it)
    "SkipLayerGuidanceSD3": "skips DiT blocks (patches_replace 'dit'); ComfyUI's UNet has none, so the node "
    "changes nothing on UNet models (SD1.5, SDXL)",
}
NO_EFFECT_TOL = 1e-3
NO_EFFECT["SkipLayerGuidanceDiT"] = NO_EFFECT["SkipLayerGuidanceDiTSimple"] = NO_EFFECT["SkipLayerGuidanceSD3"]


def apply_node(node_id, model):
    """ComfyUI's guidance node `node_id` with NODE_INPUTS on `model` (a new one per run: APG and SAG keep state)."""
    return H.run_node(node_id, model=model, **NODE_INPUTS[node_id])[0]


def soft_mask_latent():
    """An inpainting latent with a left-to-right gradient mask (what Differential Diffusion reads)."""
    mask = torch.linspace(0.0, 1.0, 16).expand(1, 16, 16).contiguous()
    return H.run_node("SetLatentNoiseMask", samples=image_latent(), mask=mask)[0]


def guidance_node_rows() -> list:
    """Each node chained before and after the patch, and before the guider: schedule 0.5 at cfg 7 equals the
    node at cfg 4 and schedule 0 at cfg 7 the node at cfg 1 (hooks see the step's effective scale and the real
    uncond, or cfg 1 semantics); three-way finite. Then guiders the patch cannot drive."""
    m = eps_model()
    checks = (  # check, cfg of ComfyUI's reference, our settings at cfg 7, exact
        ("schedule 0.5 at cfg 7 = node at cfg 4", 4.0, {"cfg_schedule": constant(0.5)}, True),
        ("schedule 0 at cfg 7 = node at cfg 1", 1.0, {"cfg_schedule": constant(0.0)}, True),
        ("three-way (empty, neg_scale 2) at cfg 7", 7.0, settings()["three-way (empty, neg_scale 2)"], False),
    )
    rows = []
    for node_id in NODE_INPUTS:
        if node_id in NO_EFFECT:
            rows.append(no_effect_row(node_id))
            continue
        node = functools.partial(apply_node, node_id)
        kw = {"latent": soft_mask_latent()} if node_id == "DifferentialDiffusion" else {}
        for check, ref_cfg, ours, exact in checks:  # the lambdas below run in this iteration
            ref_k = functools.cache(lambda: ksample(node(m), ref_cfg, **kw))
            ref_c = functools.cache(lambda: native(GUIDER, node(m), ref_cfg, **kw))
            rows += [
                measure(
                    (NODES, node_id, check, "node → patch"),
                    lambda: ksample(patch(node(m), **ours), 7.0, **kw),
                    ref_k,
                    exact=exact,
                ),
                measure(
                    (NODES, node_id, check, "patch → node"),
                    lambda: ksample(node(patch(m, **ours)), 7.0, **kw),
                    ref_k,
                    exact=exact,
                ),
                measure(
                    (NODES, node_id, check, "node → guider"),
                    lambda: guided(GUIDER, node(m), 7.0, ours, **kw),
                    ref_c,
                    exact=exact,
                ),
            ]
    return rows + guider_rows()


def no_effect_row(node_id) -> dict:
    m = eps_model()
    key = (NODES, node_id, "acts on a UNet model", "all")
    with torch.inference_mode():
        diff = float((ksample(apply_node(node_id, m), 4.0) - ksample(m, 4.0)).abs().max())
    if diff > NO_EFFECT_TOL:  # its extra model call batches differently: equal up to float rounding
        return row(*key, "FAIL", f"listed as without effect on a UNet, but changes the result by {diff:.2g}")
    return row(*key, "limitation", NO_EFFECT[node_id], diff)


def guider_rows() -> list:
    """ComfyUI's guiders with the patched model: CFGGuider is driven by the patch, the others refused."""
    m = eps_model()
    pm = patch(m, cfg_schedule=constant(0.5))
    rows = [
        measure(
            (NODES, "CFGGuider", "schedule 0.5 at cfg 7 = cfg 4", "patch → guider"),
            lambda: custom_sample(pm, native_guider(pm, 7.0)),
            lambda: custom_sample(m, native_guider(m, 4.0)),
            exact=True,
        )
    ]
    guiders = {
        "DualCFGGuider": dict(
            cond1=POS, cond2=OTHER, negative=NEG, cfg_conds=5.0, cfg_cond2_negative=2.0, style="regular"
        ),
        "PerpNegGuider": dict(positive=POS, negative=NEG, empty_conditioning=EMPTY, cfg=5.0, neg_scale=1.0),
        "BasicGuider": dict(conditioning=POS),
    }
    for node_id, inputs in guiders.items():
        rows.append(
            measure(
                (NODES, node_id, "the patched model in this guider", "patch → guider"),
                lambda: custom_sample(pm, H.run_node(node_id, model=pm, **inputs)[0]),
                refuse=True,
            )
        )
    return rows


# ------------------------------------------------------------------ nodes that touch the same step (0.33's and DiT ones)
CHAIN_ABSENT = "this ComfyUI has no {node} (added in ComfyUI 0.33)"


def absent_row(key, node_id):
    """A node this ComfyUI does not have: nothing to chain with."""
    return row(*key, "limitation", CHAIN_ABSENT.format(node=node_id))


def chain_rows() -> list:
    """Nodes whose hooks read ComfyUI's uncond slot or its batched call, chained with ours: SkipLayerGuidanceDiTSimple
    on a DiT (its sampler_calc_cond_batch_function gets exactly [cond, uncond-or-None]), NAGuidance (its attention
    patch reads the uncond slot as the negative prompt), CFGOverride (sets the guider's cfg per step); two-way exact
    against ComfyUI's own result at cfg 4 and 1, three-way finite (exact against the formula in
    tests/test_guidance_node_chains.py)."""
    from . import families as F

    def family(name):  # (model, run arguments with the prompts, its empty prompt)
        fam = F.FAMILIES[name]
        return F.model(name), {"pos": fam.cond(1), "neg": fam.cond(2), "latent": fam.latent(1), "steps": 4}, fam.cond(3)

    unet = (eps_model(), {}, EMPTY)
    nodes = {  # node_id: ((model, run arguments, empty), inputs, item)
        "SkipLayerGuidanceDiTSimple": (
            family("SD3.5 (MMDiT, flow)"),
            dict(double_layers="0", single_layers="", start_percent=0.0, end_percent=1.0),
            "SkipLayerGuidanceDiTSimple (SD3.5)",
        ),
        "NAGuidance": (unet, dict(nag_scale=5.0, nag_alpha=0.5, nag_tau=1.5), "NAGuidance"),
        "CFGOverride": (unet, dict(cfg=1.5, start_percent=0.5, end_percent=1.0), "CFGOverride"),
        "LTXVSpatioTemporalGuidance": (
            family("LTXV (video, 5-D, 128 channels)"),
            dict(scale=1.0, blocks="0", start_percent=0.0, end_percent=1.0),
            "LTXVSpatioTemporalGuidance (LTXV)",
        ),
    }
    rows = []
    for node_id, ((m, io, empty), inputs, item) in nodes.items():
        if node_id not in H.boot().NODE_CLASS_MAPPINGS:
            rows.append(absent_row((NODES, item, "chained with the patch and the guider", "all"), node_id))
            continue
        node = functools.partial(lambda n, i, model: H.run_node(n, model=model, **i)[0], node_id, inputs)
        run = {k: v for k, v in io.items() if k not in ("pos", "neg")}
        pn = {k: v for k, v in io.items() if k in ("pos", "neg")}
        for cfg in (4.0, 1.0):
            ref_k = functools.cache(lambda: ksample(node(m), cfg, **pn, **run))
            check = f"two-way at cfg {cfg:g} = ComfyUI's"
            rows += [
                measure(
                    (NODES, item, check, "node → patch"),
                    lambda: ksample(patch(node(m)), cfg, **pn, **run),
                    ref_k,
                    exact=True,
                    model=m,
                ),
                measure(
                    (NODES, item, check, "patch → node"),
                    lambda: ksample(node(patch(m)), cfg, **pn, **run),
                    ref_k,
                    exact=True,
                    model=m,
                ),
                measure(
                    (NODES, item, check, "node → guider"),
                    lambda: guided(GUIDER, node(m), cfg, **pn, **run),
                    lambda: native(GUIDER, node(m), cfg, **pn, **run),
                    exact=True,
                    model=m,
                ),
            ]
        three = dict(empty=empty, neg_scale=2.0)
        rows.append(
            measure(
                (NODES, item, "three-way (empty, neg_scale 2) at cfg 4", "node → patch"),
                lambda: ksample(patch(node(m), **three), 4.0, **pn, **run),
                lambda: ksample(node(m), 4.0, **pn, **run),
                model=m,
            )
        )
    return rows + dual_model_rows() + nag_joint_chain_rows()


def nag_joint_chain_rows() -> list:
    """A NAG term in the paper form on a joint-attention DiT (Flux) chained with the nodes that would split its
    shadow rows from the positive's: NAGuidance (its attention output patch moves the positive's image stream, not
    the shadow's) and SkipLayerGuidanceDiTSimple (its batching runs the shadow in a call of its own); refused in both
    orders before the first model call."""
    from . import families as F

    name = "Flux.1 dev (guidance-distilled)"
    fam, m = F.FAMILIES[name], F.model(name)
    run = dict(pos=fam.cond(1), neg=fam.cond(2), latent=fam.latent(1), steps=2)
    term = functools.partial(H.run_node, "GuidanceLabNAGTerm", form="paper", weight=4.0, tau=2.5, alpha=0.5)
    nodes = {
        "NAGuidance": dict(nag_scale=5.0, nag_alpha=0.5, nag_tau=1.5),
        "SkipLayerGuidanceDiTSimple": dict(double_layers="0", single_layers="", start_percent=0.0, end_percent=1.0),
    }
    rows = []
    for node_id, inputs in nodes.items():
        item = f"{node_id} with a NAG term, paper form (Flux)"
        if node_id not in H.boot().NODE_CLASS_MAPPINGS:
            rows.append(absent_row((NODES, item, "chained with the patch", "all"), node_id))
            continue
        node = functools.partial(lambda n, i, model: H.run_node(n, model=model, **i)[0], node_id, inputs)
        rows += [
            measure(
                (NODES, item, "cfg 1, refused before sampling", "node → patch"),
                lambda: ksample(patch(node(m), terms=term()[0]), 1.0, **run),
                refuse=True,
                model=m,
            ),
            measure(
                (NODES, item, "cfg 1, refused before sampling", "patch → node"),
                lambda: ksample(node(patch(m, terms=term()[0])), 1.0, **run),
                refuse=True,
                model=m,
            ),
        ]
    return rows


def dual_model_rows() -> list:
    """0.33's guiders of their own with the patched model: refused before sampling (the patch drives CFGGuider)."""
    m = eps_model()
    rows = []
    key = (NODES, "LTXVDualCFGGuider", "the patched model in this guider", "patch → guider")
    if "LTXVDualCFGGuider" not in H.boot().NODE_CLASS_MAPPINGS:
        rows.append(absent_row(key, "LTXVDualCFGGuider"))
    else:
        guider = functools.partial(
            H.run_node, "LTXVDualCFGGuider", positive=POS, negative=NEG, video_cfg=3.0, audio_cfg=7.0
        )
        rows.append(measure(key, lambda: custom_sample(m, guider(model=patch(m))[0]), refuse=True))
    key = (NODES, "DualModelGuider", "the patched model as its model", "patch → guider")
    if "DualModelGuider" not in H.boot().NODE_CLASS_MAPPINGS:
        return rows + [absent_row(key, "DualModelGuider")]
    other = H.tiny_model("eps", seed=8)
    guider = functools.partial(H.run_node, "DualModelGuider", positive=POS, cfg=4.0, negative=NEG)
    return rows + [
        measure(key, lambda: custom_sample(m, guider(model=patch(m), model_negative=other)[0]), refuse=True),
        row(
            NODES,
            "DualModelGuider",
            "the patched model as its model_negative",
            "patch → guider",
            "limitation",
            "ComfyUI runs the negative model with the positive model's options: the patch there is never called "
            "(put it on `model`, or use the CFG Guider with a model term)",
        ),
    ]


# ------------------------------------------------------------------ model terms (autoguidance) by how the weak model is made
def model_term_rows() -> list:
    """A model term made as users make weak models, equal to the same weights on a network of their own: another
    LoRA on the sampled checkpoint, the checkpoint without the sampled LoRA, a LoRA downstream of the patch; a
    separate checkpoint in another precision (finite: it differs from float32 by rounding only)."""
    from .lora import lora_state_dict, with_lora

    def build():
        return H.tiny_model("eps", seed=4)

    lora = lora_state_dict(build())

    def term(model):
        return H.run_node("GuidanceLabModelTerm", model=model, weight=1.5)[0]

    def f64(p):  # the same checkpoint in another precision (float64: the CPU runs it without casting ops)
        p.model.diffusion_model.to(torch.float64)
        p.model.diffusion_model.dtype = torch.float64
        return p

    net = build()
    cases = {  # item: (run, reference with separate networks or None)
        "LoRA clone (sampled + LoRA)": (
            lambda: ksample(patch(net, terms=term(with_lora(net, lora))), 3.0),
            lambda: ksample(patch(build(), terms=term(with_lora(build(), lora))), 3.0),
        ),
        "LoRA clone (sampled - its LoRA)": (
            lambda: ksample(patch(with_lora(net, lora), terms=term(net)), 3.0),
            lambda: ksample(patch(with_lora(build(), lora), terms=term(build())), 3.0),
        ),
        "LoRA downstream of the patch": (
            lambda: ksample(with_lora(patch(net, terms=term(net)), lora), 3.0),
            lambda: ksample(with_lora(patch(net, terms=term(build())), lora), 3.0),
        ),
        "separate checkpoint in float64": (
            lambda: ksample(patch(net, terms=term(f64(build()))), 3.0),
            lambda: ksample(patch(net, terms=term(build())), 3.0),
        ),
    }
    return [
        measure((NODES, "Model Term (Guidance Lab)", item, PATCH), run, ref, exact="LoRA" in item, model=net)
        for item, (run, ref) in cases.items()
    ]


# ------------------------------------------------------------------ conditioning features
def tiny_controlnet():
    """ComfyUI's own ControlNet (comfy.cldm) at the tiny UNet's width, random weights (a trained ControlNet's
    zero convolutions would start at 0), in comfy.controlnet.ControlNet."""
    import comfy.cldm.cldm
    import comfy.controlnet

    g = torch.Generator().manual_seed(1)
    with torch.inference_mode(False), torch.no_grad():
        net = comfy.cldm.cldm.ControlNet(
            image_size=32,
            in_channels=4,
            model_channels=32,
            hint_channels=3,
            num_res_blocks=1,
            channel_mult=[1, 2],
            num_head_channels=16,
            use_spatial_transformer=True,
            transformer_depth=[0, 1],
            transformer_depth_middle=1,
            context_dim=32,
            use_linear_in_transformer=True,
            legacy=False,
            dtype=torch.float32,
            device="cpu",
        )
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 / max(1, p[0].numel()) ** 0.5))
    return comfy.controlnet.ControlNet(net, load_device=torch.device("cpu"))


def tiny_lora_hooks():
    """HOOKS from ComfyUI's CreateHookLora on a LoRA file written for the tiny UNet (its cross-attention keys
    and values), with keyframes (strength 1, then 0.5 from half the run)."""
    import folder_paths
    import safetensors.torch

    from .lora import lora_state_dict

    folder = tempfile.mkdtemp(prefix="guidance-lab-compat-")
    atexit.register(shutil.rmtree, folder, True)
    lora = lora_state_dict(eps_model(), rank=4, seed=2, gain=0.3, suffixes=(".attn2.to_k.weight", ".attn2.to_v.weight"))
    safetensors.torch.save_file(lora, os.path.join(folder, "compat_lora.safetensors"))
    folder_paths.add_model_folder_path("loras", folder)
    hooks = H.run_node("CreateHookLora", lora_name="compat_lora.safetensors", strength_model=1.0, strength_clip=0.0)[0]
    kf = H.run_node("CreateHookKeyframe", strength_mult=1.0, start_percent=0.0)[0]
    kf = H.run_node("CreateHookKeyframe", strength_mult=0.5, start_percent=0.5, prev_hook_kf=kf)[0]
    return H.run_node("SetHookKeyframes", hooks=hooks, hook_kf=kf)[0]


def with_hooks(conditioning, hooks):
    return H.run_node(
        "ConditioningSetProperties", cond_NEW=conditioning, strength=1.0, set_cond_area="default", hooks=hooks
    )[0]


def conditioning_features() -> tuple:
    """({name: inputs of a run (pos, neg, latent, denoise) using the feature}, the LoRA hooks)."""

    def combine(a, b):
        return H.run_node("ConditioningCombine", conditioning_1=a, conditioning_2=b)[0]

    area = H.run_node("ConditioningSetArea", conditioning=OTHER, width=64, height=64, x=0, y=0, strength=1.0)[0]
    masked = H.run_node(
        "ConditioningSetMask", conditioning=OTHER, mask=right_half_mask(), set_cond_area="default", strength=1.0
    )[0]
    early = H.run_node("ConditioningSetTimestepRange", conditioning=POS, start=0.0, end=0.5)[0]
    late = H.run_node("ConditioningSetTimestepRange", conditioning=OTHER, start=0.5, end=1.0)[0]
    hooks = tiny_lora_hooks()
    cn_pos, cn_neg = H.run_node(
        "ControlNetApplyAdvanced",
        positive=POS,
        negative=NEG,
        control_net=tiny_controlnet(),
        image=torch.rand(1, 128, 128, 3, generator=torch.Generator().manual_seed(3)),
        strength=1.0,
        start_percent=0.0,
        end_percent=1.0,
    )[:2]
    return {
        "area (ConditioningSetArea)": dict(pos=combine(area, POS)),
        "mask (ConditioningSetMask)": dict(pos=combine(masked, POS)),
        "timestep range (ConditioningSetTimestepRange)": dict(pos=combine(early, late)),
        "LoRA hooks with keyframes (CreateHookLora)": dict(pos=with_hooks(POS, hooks), neg=with_hooks(NEG, hooks)),
        "ControlNet (tiny comfy.cldm)": dict(pos=cn_pos, neg=cn_neg),
        "inpainting (SetLatentNoiseMask)": dict(
            latent=H.run_node("SetLatentNoiseMask", samples=image_latent(), mask=right_half_mask())[0]
        ),
        "img2img (denoise 0.5)": dict(latent=image_latent(), denoise=0.5),
    }, hooks


def conditioning_rows() -> list:
    """Plain CFG exact, schedule and three-way finite, with each feature; through the patch and the guider."""
    m = eps_model()
    features, hooks = conditioning_features()
    checks = {name: settings()[name] for name in ("linear schedule 1→0", "three-way (empty, neg_scale 2)")}
    rows = []
    for item, kw in features.items():
        item_checks = dict(checks)
        if "hooks" in item:
            item_checks["three-way, the empty prompt with the hooks"] = {
                "empty": with_hooks(EMPTY, hooks),
                "neg_scale": 2.0,
            }
        for route in (PATCH, GUIDER):
            plain = functools.cache(lambda: native(route, m, CFG, **kw))
            rows.append(
                measure(
                    (CONDITIONING, item, "plain cfg 6", route), lambda: guided(route, m, CFG, **kw), plain, exact=True
                )
            )
            for check, cfg_settings in item_checks.items():
                rows.append(
                    measure(
                        (CONDITIONING, item, check, route), lambda: guided(route, m, CFG, cfg_settings, **kw), plain
                    )
                )
    return rows


# ------------------------------------------------------------------ perturbed attention chained with SAG
SAG_CHECK_STEPS, PAG_WEIGHT = 4, 3.0
SDXL_MIDDLE_DEPTH = 10  # SDXL's middle block: one spatial transformer of 10 transformer blocks


@functools.cache
def middle_block_unets() -> dict:
    """{label: (model, positive, negative, middle-block depth)}: ComfyUI's SDXL class at tiny width with SDXL's
    middle block of 10 transformers, and the tiny SD1.5 (a middle block of 1), in float64."""
    import comfy.model_base

    from . import families as F

    cfg = F._config(
        "SDXL",
        dict(F.UNET_TINY, adm_in_channels=2816, num_classes="sequential", transformer_depth_middle=SDXL_MIDDLE_DEPTH),
    )
    sdxl = float64(F._patcher(comfy.model_base.SDXL(cfg, device="cpu"), 12))
    return {
        f"SDXL middle block ({SDXL_MIDDLE_DEPTH} transformers)": (
            sdxl,
            F.FAMILIES["SDXL"].cond(1),
            F.FAMILIES["SDXL"].cond(2),
            SDXL_MIDDLE_DEPTH,
        ),
        "SD1.5 middle block (1 transformer)": (
            float64(F.sd15()),
            F.FAMILIES["SD1.5"].cond(1),
            F.FAMILIES["SD1.5"].cond(2),
            1,
        ),
    }


def sag(model):
    """ComfyUI's Self-Attention Guidance: its attn1 patch under the 3-part key ("middle", 0, 0)."""
    return apply_node("SelfAttentionGuidance", model)


def pag_term(weight=PAG_WEIGHT):
    return H.run_node("GuidanceLabPerturbedTerm", mode="pag", blocks="middle.0", weight=weight, seg_sigma=10.0)[0]


def reference_pag(model, transformers, scale=PAG_WEIGHT):
    """PAG as ComfyUI's PerturbedAttentionGuidance computes it (a post-CFG hook: the positive again, in a call of
    its own, D += s (D_pos - D_pag)), with the identity attention set on each of `transformers` of the middle
    block by its own 3-part key, which no other node's patch can shadow."""
    import comfy.model_patcher
    import comfy.samplers

    def identity(q, k, v, extra_options, mask=None):
        return v

    def post_cfg(args):
        opts = args["model_options"].copy()
        for i in transformers:
            opts = comfy.model_patcher.set_model_options_patch_replace(opts, identity, "attn1", "middle", 0, i)
        (pag,) = comfy.samplers.calc_cond_batch(args["model"], [args["cond"]], args["input"], args["sigma"], opts)
        return args["denoised"] + (args["cond_denoised"] - pag) * scale

    m = model.clone()
    m.set_model_sampler_post_cfg_function(post_cfg)
    return m


def pag_then_sag(model, transformers):
    """The right result of SAG + a PAG term on the middle block: the guided prediction with PAG perturbing
    `transformers` of the block on the PAG rows, then SAG's post-CFG hook on it (SAG reads the real uncond and
    its attention map, its own extra call unchanged)."""
    return sag(reference_pag(model, transformers))


def attention_chain_rows() -> list:
    """SAG (its patch on the middle block's first transformer) with Guidance Lab's PAG term on the same block,
    through the patch in either order and the guider: exact against PAG on every transformer of the block
    followed by SAG. ComfyUI's own PerturbedAttentionGuidance with SAG: a limitation of ComfyUI's lookup."""
    rows = []
    steps = dict(steps=SAG_CHECK_STEPS)
    for label, (m, pos, neg, depth) in middle_block_unets().items():
        io = dict(pos=pos, neg=neg, **steps)
        check = f"PAG term, {label}, SAG on its first: = PAG on every transformer, then SAG"
        ref_k = functools.cache(lambda: ksample(pag_then_sag(m, range(depth)), CFG, **io))
        ref_c = functools.cache(lambda: native(GUIDER, pag_then_sag(m, range(depth)), CFG, **io))
        rows += [
            measure(
                (NODES, "SelfAttentionGuidance", check, "node → patch"),
                lambda: ksample(patch(sag(m), terms=pag_term()), CFG, **io),
                ref_k,
                exact=True,
                model=m,
            ),
            measure(
                (NODES, "SelfAttentionGuidance", check, "patch → node"),
                lambda: ksample(sag(patch(m, terms=pag_term())), CFG, **io),
                ref_k,
                exact=True,
                model=m,
            ),
            measure(
                (NODES, "SelfAttentionGuidance", check, "node → guider"),
                lambda: guided(GUIDER, sag(m), CFG, dict(terms=pag_term()), **io),
                ref_c,
                exact=True,
                model=m,
            ),
        ]
    return rows + [comfy_pag_with_sag_row()]


def comfy_pag_with_sag_row() -> dict:
    """ComfyUI's PerturbedAttentionGuidance + SAG (both ComfyUI's): PAG's patch ("middle", 0) loses to SAG's
    ("middle", 0, 0) on the first transformer. Checked: equal to PAG on the other transformers (SDXL's middle
    block), and to SAG alone where the block has one transformer (SD1.5)."""
    key = (NODES, "PerturbedAttentionGuidance", "with SelfAttentionGuidance (both ComfyUI's)", "all")
    (sdxl, pos, neg, depth), (sd15, pos15, neg15, _) = middle_block_unets().values()
    comfy_pag = functools.partial(apply_node, "PerturbedAttentionGuidance")
    with torch.inference_mode():
        off = [
            float(
                (
                    ksample(comfy_pag(sag(sdxl)), CFG, pos=pos, neg=neg, steps=SAG_CHECK_STEPS)
                    - ksample(reference_pag(sag(sdxl), range(1, depth)), CFG, pos=pos, neg=neg, steps=SAG_CHECK_STEPS)
                )
                .abs()
                .max()
            ),
            float(
                (
                    ksample(comfy_pag(sag(sd15)), CFG, pos=pos15, neg=neg15, steps=SAG_CHECK_STEPS)
                    - ksample(sag(sd15), CFG, pos=pos15, neg=neg15, steps=SAG_CHECK_STEPS)
                )
                .abs()
                .max()
            ),
        ]
    if max(off) >= TOL:
        return row(
            *key,
            "FAIL",
            f"listed as shadowed on the middle block's first transformer, but differs from that "
            f"by {max(off):.2g}: ComfyUI's lookup changed, update this row",
            max(off),
        )
    return row(
        *key,
        "limitation",
        "ComfyUI looks up SAG's attn1 patch (middle, 0, transformer 0) before PAG's "
        "(middle, 0): PAG does not act on the middle block's first transformer (SDXL: "
        f"{depth - 1} of {depth} perturbed; SD1.5: none, PAG adds nothing); Guidance Lab's PAG term chains "
        "with SAG exactly",
        max(off),
    )
