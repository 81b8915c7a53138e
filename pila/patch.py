"""The per-model-call flow correction, as a wrapper around a denoiser call (docs/method.md §1, §4, §8).

Pure PyTorch: ComfyUI's APPLY_MODEL wrapper signature is mirrored but nothing here imports ComfyUI, so the
logic is tested without it. Conventions: latents `[B, C, T, H, W]`; sigma per batch row, 1 = pure noise; the
wrapped executor returns the clean estimate `x0 = x - sigma * v` (Eq. 1), so `v = (x - x0) / sigma` and the
corrected field `v_phys = v + strength * gate(sigma) * dv` (Eq. 10) gives `x0_phys = x0 - sigma * strength *
gate(sigma) * dv`. Both CFG rows get the same physics condition (docs/method.md §4: the uncond row's own
cross-attention text is the negative prompt and must not be used).
"""
from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from .condition import pool_text
from .decoder import gate, sigma_per_sample
from .steps import StepRange, parse_steps, step_of_sigma

log = logging.getLogger("pila")

SIGMA_MIN = 1e-4  # rows at or below this sigma are returned uncorrected (the correction term scales with sigma)


class PILAPatchError(ValueError):
    """A model, latent or setting the adapter cannot serve; the message says what to change."""


@dataclass
class CorrectionSettings:
    """Inference knobs (docs/method.md §8); None means "the adapter's config default"."""

    strength: float = 1.0
    gate_floor: float = 0.05
    top_k: int | None = None
    prior_strength: float | None = None
    temperature: float | None = None
    exclude: tuple[str, ...] = ()
    steps: StepRange = field(default_factory=StepRange)
    start_percent: float = 0.0  # fraction of the schedule where the correction starts (0 = pure noise)
    end_percent: float = 1.0  # ... and where it ends (1 = the last step); ComfyUI's start/end_percent convention

    def __post_init__(self):
        if isinstance(self.steps, str):
            self.steps = parse_steps(self.steps)
        self.exclude = tuple(self.exclude)
        assert 0.0 <= self.gate_floor <= 1.0, f"gate_floor must be in [0, 1], got {self.gate_floor}"
        assert 0.0 <= self.start_percent <= self.end_percent <= 1.0, \
            f"need 0 <= start_percent <= end_percent <= 1, got {self.start_percent} and {self.end_percent}"

    @property
    def all_percent(self) -> bool:
        return self.start_percent <= 0.0 and self.end_percent >= 1.0


@dataclass
class CallRecord:
    run: int  # sampling run counter (a new sample_sigmas schedule starts a run)
    step_offset: int  # steps of the full schedule before this run (Wan 2.2's low-noise half)
    sigma: Tensor  # [B] as given to the model, on its device (read back only when asked)
    rows: tuple[int, ...]  # cond_or_uncond per chunk: 0 = positive, 1 = negative
    applied: bool  # False when strength 0, outside the step range, or every row at sigma ~ 0
    step: int | None = None  # 1-based step of the full schedule, when known at call time
    weights: Tensor | None = None  # [B, 8] router weights (diagnostics only)
    change: Tensor | None = None  # [B, 8, H, W] expert change magnitude, mean over T (diagnostics only)


class Recorder:
    """What the correction did per model call: for tests (call count, sigmas) and the expert-map diagnostics.
    Tensors stay on their device; `summary()` reads them back on demand, never during sampling."""

    def __init__(self, keep_maps: bool = False, max_calls: int = 4096):
        self.keep_maps, self.max_calls = keep_maps, max_calls
        self.calls: list[CallRecord] = []
        self.schedules: dict[int, Tensor] = {}  # run -> that run's sample_sigmas (on its device until read)
        self.runs = 0

    def reset(self):
        self.calls.clear()
        self.schedules.clear()

    def add(self, rec: CallRecord):
        if len(self.calls) < self.max_calls:
            self.calls.append(rec)

    def step_of(self, rec: CallRecord) -> int | None:
        if rec.step is not None:
            return rec.step
        sched = self.schedules.get(rec.run)
        if sched is None:
            return None
        return rec.step_offset + step_of_sigma(float(rec.sigma.max()), sched)

    def summary(self) -> list[dict[str, Any]]:
        """One dict per model call with plain Python values (JSON-ready)."""
        out = []
        for i, r in enumerate(self.calls):
            out.append({"call": i, "run": r.run, "step": self.step_of(r), "applied": r.applied,
                        "sigma": [round(float(s), 6) for s in r.sigma.detach().float().cpu()],
                        "rows": ["uncond" if c == 1 else "cond" for c in r.rows]})
        return out


def physics_condition(text_states: Tensor | None, *, text_dim: int = 4096) -> Tensor | None:
    """UMT5 states `[B, L, D]` (or pooled `[B, D]`) -> one pooled `[1, D]` float32 CPU vector (first row)."""
    if text_states is None:
        return None
    pooled = pool_text(text_states.detach().float().cpu())
    if pooled.shape[-1] != text_dim:
        raise PILAPatchError(f"the physics conditioning has width {pooled.shape[-1]}, the adapter reads {text_dim}-d "
                             "UMT5 text states. Encode the prompt with Wan's UMT5-XXL text encoder.")
    return pooled[:1].contiguous()


class FlowCorrection:
    """APPLY_MODEL-style wrapper: `fn(executor, x, t, c_concat, c_crossattn, control, transformer_options, **kw)`.

    Holds the adapter (device placement is its owner's business: ComfyUI's additional-models mechanism), the
    pooled physics text `[1, 4096]`, the multi-hot labels `[8]` and the settings. It deliberately has no `.to`
    method (ComfyUI would cast wrappers with one to the model dtype, possibly fp8)."""

    def __init__(self, adapter: torch.nn.Module, settings: CorrectionSettings | None = None, *,
                 text: Tensor | None = None, labels: Tensor | None = None, recorder: Recorder | None = None,
                 step_offset: int = 0, name: str = "PILA", sigma_range: tuple[float, float] = (float("inf"), 0.0)):
        cfg = adapter.config
        self.adapter, self.settings, self.recorder, self.name = adapter, settings or CorrectionSettings(), recorder, name
        self.channels, self.text_dim, self.num_categories = cfg.latent_channels, cfg.text_dim, cfg.num_categories
        self.text = physics_condition(text, text_dim=self.text_dim)
        if labels is not None:
            labels = torch.as_tensor(labels, dtype=torch.float32).flatten().cpu()
            assert labels.numel() == self.num_categories, f"labels must be multi-hot [{self.num_categories}], got {labels.numel()}"
        self.labels = labels
        self.step_offset = step_offset
        # (sigma_start, sigma_end) from the settings' start/end_percent through the model's own schedule
        self.sigma_start, self.sigma_end = float(sigma_range[0]), float(sigma_range[1])
        self._nonfinite: list[Tensor] = []  # per call: dv values the adapter scrubbed of NaN/inf (read once per run)
        self._cache: dict[tuple, tuple[Tensor | None, Tensor | None]] = {}  # (device) -> (text, labels) there
        self._run_ref: Callable[[], Any] | None = None
        self._run_sched: Tensor | None = None
        self._warned_device = False

    # ---- checks --------------------------------------------------------------------------------------------
    def check_latent(self, x: Tensor):
        """A clear error for latents the adapter cannot read (never a crash deep in a conv)."""
        if x.ndim != 5:
            raise PILAPatchError(f"{self.name}: the model works on {x.ndim - 2}-D latents {tuple(x.shape)}; PILA adapters "
                                 "read Wan video latents [B, C, T, H, W]. Use a Wan 2.1 / Wan 2.2 A14B model.")
        if x.shape[1] != self.channels:
            hint = (" This is a 48-channel Wan 2.2 TI2V-5B latent; PILA adapters are trained on the 16-channel Wan 2.1 "
                    "VAE space (Wan 2.1 and Wan 2.2 A14B)." if x.shape[1] == 48 else "")
            raise PILAPatchError(f"{self.name}: the latent has {x.shape[1]} channels, the adapter reads "
                                 f"{self.channels}.{hint}")

    # ---- per-run checks (called around a whole sampling run, see nodes/common.py) -------------------------------
    @property
    def restricts_sigma(self) -> bool:
        return not (self.sigma_start == float("inf") and self.sigma_end <= 0.0)

    def in_sigma_range(self, sigma: float) -> bool:
        return self.sigma_end <= sigma <= self.sigma_start  # as SkipLayerGuidanceDiT / EasyCache compare

    def begin_run(self, sigmas: Tensor) -> str | None:
        """Before a sampling run with schedule `sigmas` (N + 1 values): a warning when the step range and the
        start/end percent leave no step of this run to correct (the correction would silently do nothing)."""
        self._nonfinite = []
        st = self.settings
        if st.strength == 0.0 or (st.steps.is_all and not self.restricts_sigma):
            return None
        s = sigmas.detach().float().cpu().flatten()
        n = s.numel() - 1
        live = [i for i in range(n) if (self.step_offset + i + 1) in st.steps and self.in_sigma_range(float(s[i]))]
        if live:
            return None
        what = []
        if not st.steps.is_all:
            what.append(f"step range {st.steps.text!r}")
        if self.restricts_sigma:
            what.append(f"start/end percent {st.start_percent:g}-{st.end_percent:g} "
                        f"(sigma {min(self.sigma_start, 1.0):.3f} to {self.sigma_end:.3f})")
        first, last = self.step_offset + 1, self.step_offset + n
        return (f"{self.name}: the {' and the '.join(what)} match none of this run's steps {first}..{last} "
                f"(sigma {float(s[0]):.3f} to {float(s[n - 1]):.3f}); the correction does nothing in this run. "
                "Widen the range or set it to 'all' / 0 and 1.")

    def end_run(self) -> str | None:
        """After a sampling run: a warning when the adapter had to scrub non-finite dv values (one host read)."""
        counts, self._nonfinite = self._nonfinite, []
        if not counts:
            return None
        bad = int(torch.stack([c.to(counts[0].device) for c in counts]).sum())
        if bad == 0:
            return None
        return (f"{self.name}: the adapter produced {bad} non-finite (NaN/inf) dv values in this run; they were set to 0, "
                "so the correction was partly or wholly off. The adapter weights are probably damaged or do not fit "
                "this model: reload or retrain the adapter.")

    # ---- per-run bookkeeping ---------------------------------------------------------------------------------
    def _new_run(self, sample_sigmas: Tensor | None) -> bool:
        """True when this call starts a new sampling run (a new schedule object)."""
        if sample_sigmas is None:
            return False
        if self._run_ref is not None and self._run_ref() is sample_sigmas:
            return False
        try:
            self._run_ref = weakref.ref(sample_sigmas)
        except TypeError:  # pragma: no cover - not weak-referenceable
            self._run_ref = lambda s=sample_sigmas: s
        self._run_sched = None
        return True

    def _schedule(self, sample_sigmas: Tensor) -> Tensor:
        if self._run_sched is None:  # one device -> host read per sampling run, not per step
            self._run_sched = sample_sigmas.detach().float().cpu()
        return self._run_sched

    def _inputs_on(self, device: torch.device) -> tuple[Tensor | None, Tensor | None]:
        key = (str(device),)
        if key not in self._cache:  # one host -> device copy per device, not per step
            t = None if self.text is None else self.text.to(device)
            y = None if self.labels is None else self.labels.to(device)[None]
            self._cache[key] = (t, y)
        return self._cache[key]

    # ---- the wrapper -----------------------------------------------------------------------------------------
    def __call__(self, executor, x: Tensor, t: Tensor, c_concat=None, c_crossattn=None, control=None,
                 transformer_options: dict | None = None, **kwargs) -> Tensor:
        opts = transformer_options if transformer_options is not None else {}
        x0 = executor(x, t, c_concat, c_crossattn, control, opts, **kwargs)
        return self.correct(x, t, x0, opts)

    def correct(self, x: Tensor, t: Tensor, x0: Tensor, transformer_options: dict | None = None) -> Tensor:
        """x0 -> x0_phys for one model call (see the module docstring)."""
        opts = transformer_options or {}
        st = self.settings
        sample_sigmas = opts.get("sample_sigmas")
        rec = self.recorder
        new_run = self._new_run(sample_sigmas)
        if rec is not None and new_run:
            if self.step_offset == 0:
                rec.reset()
            rec.runs += 1
            rec.schedules[rec.runs] = sample_sigmas.detach()  # read back only by summary(), never during sampling
        rows = tuple(opts.get("cond_or_uncond", ()))
        sigma = t.detach().reshape(-1)

        def record(applied: bool, step: int | None = None, aux=None):
            if rec is None:
                return
            r = CallRecord(run=rec.runs, step_offset=self.step_offset, sigma=sigma.clone(), rows=rows,
                           applied=applied, step=step)
            if aux is not None and rec.keep_maps:
                r.weights = aux.weights.detach().float()
                r.change = aux.expert_change.detach().float().mean(dim=2)  # [B, 8, H, W]
            rec.add(r)

        if st.strength == 0.0:  # bit-exact passthrough
            record(False)
            return x0
        self.check_latent(x)
        assert x0.shape == x.shape, f"{self.name}: the model returned {tuple(x0.shape)} for a latent {tuple(x.shape)}"

        if self.restricts_sigma and not self.in_sigma_range(float(sigma.max())):  # one scalar read, only when set
            record(False)
            return x0
        step = None
        if not st.steps.is_all:
            if sample_sigmas is None:
                raise PILAPatchError(f"{self.name}: a step range ({st.steps.text!r}) needs the sampler's sigma schedule, "
                                     "which this sampler does not provide. Set the step range to 'all'.")
            # one scalar read per model call, only when a step range is set
            step = self.step_offset + step_of_sigma(float(sigma.max()), self._schedule(sample_sigmas))
            if step not in st.steps:
                record(False, step)
                return x0

        B = x.shape[0]
        s = sigma_per_sample(sigma, B, x.device)
        s5 = s.view(B, 1, 1, 1, 1)
        live = s5 > SIGMA_MIN
        xf, x0f = x.float(), x0.float()
        v = torch.where(live, (xf - x0f) / s5.clamp_min(SIGMA_MIN), torch.zeros_like(xf))  # Eq. 1

        adapter = self.adapter
        dev = getattr(adapter, "device", x.device)
        if dev != x.device and not self._warned_device:
            log.warning("%s: the adapter is on %s, the latent on %s; inputs are copied every step. Load the adapter "
                        "with device 'auto' so that ComfyUI places it with the model.", self.name, dev, x.device)
            self._warned_device = True
        text, labels = self._inputs_on(dev)
        keep_aux = rec is not None and rec.keep_maps
        with torch.no_grad():
            out = adapter(xf.to(dev), s.to(dev), v.to(dev), text_states=None if text is None else text.expand(B, -1),
                          labels=None if labels is None else labels.expand(B, -1), top_k=st.top_k,
                          prior_strength=st.prior_strength, temperature=st.temperature, exclude=st.exclude,
                          return_aux=keep_aux)
        dv = (out.dv if keep_aux else out).to(device=x.device, dtype=torch.float32)
        if getattr(adapter, "nonfinite", None) is not None:  # the adapter's scrub count for this call, read per run
            self._nonfinite.append(adapter.nonfinite)
        g = gate(s5, st.gate_floor)  # Eq. 10: floor + (1 - floor) (1 - sigma)^2
        x0_phys = x0f - s5 * (st.strength * g) * dv
        x0_phys = torch.where(live, x0_phys, x0f)
        record(True, step, out if keep_aux else None)
        return x0_phys.to(x0.dtype)
