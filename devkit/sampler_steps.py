"""The sampler's own step of a model call, read from its loop, as an independent reference for the pack's step
counter (guidance_core.schedules.StepCounter): tests and compatibility rows count guided calls per step with it."""

import inspect


def sampler_step(sigma: float, sample_sigmas) -> int:
    """The step of the model call being made: the loop index i of the k-diffusion sampler function on the call
    stack; for a sampler without one (uni_pc, whose loop evaluates the next step's point), the run sigma nearest
    the call's sigma."""
    frame = inspect.currentframe()
    while frame is not None:
        code = frame.f_code
        in_sampler = code.co_filename.replace("\\", "/").endswith("k_diffusion/sampling.py")
        if in_sampler and code.co_name.startswith("sample_") and "i" in frame.f_locals:
            return int(frame.f_locals["i"])
        frame = frame.f_back
    sig = [float(v) for v in sample_sigmas]
    return min(range(len(sig) - 1), key=lambda j: abs(sig[j] - sigma))


class StepRows:
    """Rows (batch entries) of every diffusion-model forward of `patcher`, by the sampler's own step."""

    def __init__(self, patcher):
        self.by_step = {}
        self.handle = patcher.model.diffusion_model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        x = args[0] if args else kwargs["x"]
        opts = kwargs["transformer_options"]
        step = sampler_step(float(opts["sigmas"].max()), opts["sample_sigmas"])
        self.by_step.setdefault(step, []).append(int(x.shape[0]))

    def close(self):
        self.handle.remove()


def rows_by_step(model, run) -> dict:
    """run() (a sampling run of `model`), and the rows of its model calls: {step: [rows of each call]}."""
    rec = StepRows(model)
    try:
        run()
    finally:
        rec.close()
    return rec.by_step


def mixed_steps(by_step: dict) -> list:
    """Steps whose calls do not all have the same rows (some guided, some not)."""
    return sorted(s for s, rows in by_step.items() if len(set(rows)) != 1)
