"""PILAAdapter: encoder -> AFE bank -> routed experts refine the bank -> decoder -> dv (SPEC sections 1-4, 6).

Conventions: latents `[B, C, T, H, W]` (C = 16 for Wan 2.1/2.2, 3 for a pixel-space toy world); sigma in
[0, 1] with 1 = pure noise, `x_s = (1 - s) x0 + s noise`, so `x0_hat = x_s - s v` (Eq. 1). The adapter
returns the raw correction dv; `apply_correction(v, dv, sigma)` gates it (Eq. 10).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor, nn

from .afe import AFE
from .bank import ALL_PHASES, active_slots, readout, slot_mask
from .condition import ConditionEncoder, pool_text
from .config import PILAConfig
from .csrc import CSRCConstants, routed_csrc_loss
from .decoder import FlowDecoder, sigma_per_sample
from .encoder import Encoder, ScaffoldHead
from .experts import ExpertBank
from .router import Router



@dataclass
class PILAOutput:
    dv: Tensor  # [B, C, T, H, W] NaN-scrubbed and clamped, not gated
    h: Tensor  # [B, hidden, T, H, W] encoder feature
    c: Tensor  # [B, hidden] condition
    scaffold: Tensor  # [B, 32, T, H, W] pre-AFE scaffold
    bank: Tensor  # [B, 32, T, H, W] AFE bank B
    refined: Tensor  # [B, 32, T, H, W] B' = B + sum_k w_k dB_k
    u: Tensor  # [B, 2, T, H, W] u_head on the bank's u slot (= the scaffold's)
    logits: Tensor  # [B, 8] router l' (prior added, excluded = -inf)
    weights: Tensor  # [B, 8] dense routing weights, 0 where not selected
    selected: Tensor  # [B, k] long
    expert_change: Tensor  # [B, 8, T, H, W] |w_k dB_k| per pixel, 0 for unselected experts
    fields: dict[str, Tensor] = field(default_factory=dict)  # AFE's physical fields (active slots)
    x0_hat: Tensor | None = None  # [B, C, T, H, W]
    losses: dict[str, Tensor] = field(default_factory=dict)  # "csrc" (Eq. 7) + per-category terms


class PILAAdapter(nn.Module):
    """The complete PILA adapter. `PILAAdapter(PILAConfig(...))` or `PILAAdapter(hidden=64, ...)`; keyword
    arguments override the config's fields."""

    def __init__(self, config: PILAConfig | None = None, **overrides):
        super().__init__()
        config = replace(config or PILAConfig(), **overrides)
        self.config = cfg = config
        H, G = cfg.hidden, cfg.groups
        self.encoder = Encoder(cfg.latent_channels, H, groups=G)  # E + the sigma MLP
        self.scaffold = ScaffoldHead(H)
        self.afe = AFE(H, u_hidden=cfg.u_hidden, mu=cfg.mu, lam=cfg.lam)  # u_head + constructors
        self.condition = ConditionEncoder(cfg.text_dim, cfg.num_categories, H)
        self.router = Router(H, cfg.num_categories)
        self.experts = ExpertBank(H, groups=G, num_experts=cfg.num_categories)
        self.decoder = FlowDecoder(H, cfg.latent_channels, groups=G)
        self.csrc = CSRCConstants()  # learnable latent-scale constants of the residuals (SPEC section 5)

    # ---- helpers -------------------------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.decoder.out.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.decoder.out.weight.device

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Named parameter groups for the training stages (SPEC section 7)."""
        return {
            "encoder": [*self.encoder.parameters(), *self.scaffold.parameters()],  # E, scaffold, sigma MLP
            "u_head": list(self.afe.u_head.parameters()),
            "constructors": list(self.afe.constructors.parameters()),
            "condition": list(self.condition.parameters()),
            "router": list(self.router.parameters()),
            "experts": list(self.experts.parameters()),
            "decoder": list(self.decoder.parameters()),
            "csrc": list(self.csrc.parameters()),
        }

    def features(self, x_t: Tensor, sigma: Tensor | float, v: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(x0_hat, h, sigma embedding, scaffold): the part Stage A trains (SPEC section 7)."""
        C = self.config.latent_channels
        assert x_t.ndim == 5 and x_t.shape[1] == C, f"x_t must be [B, {C}, T, H, W], got {tuple(x_t.shape)}"
        assert v.shape == x_t.shape, f"v {tuple(v.shape)} must match x_t {tuple(x_t.shape)}"
        s = sigma_per_sample(sigma, x_t.shape[0], x_t.device)
        # Eq. 1: x0_hat = x_s - s v (sigma 1 = pure noise), formed in float32
        x0_hat = (x_t.float() - s.view(-1, 1, 1, 1, 1) * v.float()).to(self.dtype)
        h, s_emb = self.encoder(x0_hat, s.to(self.dtype))
        return x0_hat, h, s_emb, self.scaffold(h)

    # ---- the call -------------------------------------------------------------------------------------------
    def forward(self, x_t: Tensor, sigma: Tensor | float, v: Tensor, text_states: Tensor | None = None,
                text_mask: Tensor | None = None, labels: Tensor | None = None, *, top_k: int | None = None,
                prior_strength: float | None = None, temperature: float | None = None,
                exclude: Iterable[str | int] = (), active_phase: int = ALL_PHASES, return_aux: bool = False,
                compute_residuals: bool = False, physical_mask: Tensor | Callable[[PILAOutput], Tensor] | None = None,
                csrc_labels: Tensor | None = None) -> Tensor | PILAOutput:
        """One correction (SPEC sections 1, 3, 4, 6).

        x_t, v: `[B, C, T, H, W]` noisy latent and the frozen backbone's velocity; sigma: float or `[B]`
        (1 = pure noise). text_states: `[B or 1, L, text_dim]` physics-description states (pooled here over
        rows with norm > 1e-6 and text_mask), already pooled `[B or 1, text_dim]`, or None (zeros).
        labels: `[B, 8]` or `[8]` multi-hot categories, or None (zeros). top_k / prior_strength / temperature
        override the config for this call (top_k = 0: no experts, B' = B); exclude: category names or
        indices never selected; active_phase: staged recovery 0..4 (inference: 4).

        Returns dv `[B, C, T, H, W]` (NaN-scrubbed, clamped to +-dv_clamp, not gated; see apply_correction),
        or a PILAOutput with the intermediate tensors when return_aux or compute_residuals is set;
        compute_residuals fills `losses` with the routed CSRC loss (Eq. 7) on physical_mask
        (`[B, 1, T, H, W]`, None = ones, or a function of this call's PILAOutput that returns it, for masks
        built from the routed bank); csrc_labels (default: labels) are the labels the loss uses, e.g. with the
        samples above a sigma threshold zeroed while routing still sees their labels (SPEC section 7)."""
        cfg = self.config
        B = x_t.shape[0]
        x0_hat, h, s_emb, scaffold = self.features(x_t, sigma, v)
        bank, fields = self.afe(h, scaffold, active_phase=active_phase)

        pooled = pool_text(text_states, text_mask, batch=B, dim=cfg.text_dim).to(x_t.device)
        if pooled.shape[0] == 1 and B > 1:  # one physics description for every row (CFG cond + uncond)
            pooled = pooled.expand(B, -1)
        y = torch.zeros(B, cfg.num_categories, device=x_t.device) if labels is None else labels.to(x_t.device).float()
        if y.ndim == 1:
            y = y[None].expand(B, -1)
        assert y.shape == (B, cfg.num_categories), f"labels must be [B, {cfg.num_categories}], got {tuple(y.shape)}"
        c = self.condition(pooled, y, s_emb)

        routing = self.router(
            c, y, top_k=cfg.top_k if top_k is None else top_k,
            prior_strength=cfg.prior_strength if prior_strength is None else prior_strength,
            temperature=cfg.temperature if temperature is None else temperature, exclude=tuple(exclude))
        active_mask = None if active_phase == ALL_PHASES else slot_mask(active_slots(active_phase), device=x_t.device)
        ex = self.experts(h, c, bank, routing.weights, routing.selected, active_mask=active_mask,
                          keep_views=compute_residuals, keep_change=return_aux)

        dv = self.decoder(h, c, ex.refined, v.to(self.dtype))
        dv = torch.nan_to_num(dv, nan=0.0, posinf=cfg.dv_clamp, neginf=-cfg.dv_clamp).clamp(-cfg.dv_clamp, cfg.dv_clamp)
        if not (return_aux or compute_residuals):
            return dv

        change = ex.change if ex.change is not None else bank.new_zeros(B, cfg.num_categories, *bank.shape[2:])
        out = PILAOutput(
            dv=dv, h=h, c=c, scaffold=scaffold, bank=bank, refined=ex.refined, u=fields["u"],
            logits=routing.logits, weights=routing.weights, selected=routing.selected,
            expert_change=change, fields=fields, x0_hat=x0_hat)
        if compute_residuals:
            mask = physical_mask(out) if callable(physical_mask) else physical_mask
            y_csrc = y if csrc_labels is None else csrc_labels.to(y.device).float().expand_as(y)
            out.losses = self.residual_losses(ex.views, routing.weights, y_csrc, mask)
        return out

    def expert_fields(self, view: Tensor) -> dict[str, Tensor]:
        """An expert's view B + dB_k -> its physical readout in float32, u from u_head (SPEC sections 2, 5)."""
        view = view.float()
        with torch.autocast(view.device.type, enabled=False):  # residuals from fp32 fields, also under bf16 autocast
            f = readout(view)
            f["u"] = self.afe.u_head(view.to(self.dtype))
        return {k: t.float() for k, t in f.items()}

    def residual_losses(self, views: dict[int, tuple[Tensor, Tensor]], weights: Tensor, labels: Tensor,
                        physical_mask: Tensor | None = None) -> dict[str, Tensor]:
        """Routed CSRC loss (Eq. 7) over the selected experts' views; "csrc" plus per-category entries."""
        labelled = labels > 0.5  # experts no sample both selected and labelled contribute nothing (Eq. 7)
        fviews = {k: (idx, self.expert_fields(view)) for k, (idx, view) in views.items() if labelled[idx, k].any()}
        mask = None if physical_mask is None else physical_mask.float()
        total, parts = routed_csrc_loss(fviews, weights.float(), labels.float(), consts=self.csrc, mask=mask)
        return {"csrc": total, **parts}
