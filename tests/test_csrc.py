"""CSRC constants, per-category evaluation (Eq. 6) and the routed loss (Eq. 7), docs/method.md §5."""
import math

import pytest
import torch

from pila.csrc import (CATEGORY_TERMS, FIELD_CHANNELS, TERMS, CSRCConstants, category_fields, category_loss,
                       category_terms, routed_csrc_loss)
from pila.taxonomy import CATEGORIES

SHAPE = (5, 9, 9)  # T, H, W: every term has an interior


def fields(n, *, seed=0, shape=SHAPE, dtype=torch.float32, grad=False):
    g = torch.Generator().manual_seed(seed)
    out = {k: torch.randn(n, c, *shape, generator=g).to(dtype) for k, c in FIELD_CHANNELS.items()}
    out["rho"] = out["rho"].abs() + 0.5
    return {k: v.requires_grad_(grad) for k, v in out.items()}


# ------------------------------------------------------------------------------------------ constants

def test_constants_init_bounds_and_gradients():
    c = CSRCConstants()
    init = c.as_dict()
    for name, (lo, hi, v0) in CSRCConstants.BOUNDS.items():
        assert math.isclose(init[name], v0, rel_tol=1e-5, abs_tol=1e-7), (name, init[name])
    assert init["L"] == 0.0  # signed latent heat starts uncoupled
    loss = sum(getattr(c, n) * (i + 1) for i, n in enumerate(CSRCConstants.BOUNDS))
    loss.backward()
    for n, p in c.named_parameters():
        assert p.grad is not None and p.grad.abs() > 0, n
    with torch.no_grad():
        for p in c.parameters():
            p.fill_(1e4)
    assert all(math.isclose(c.as_dict()[n], hi, rel_tol=1e-6) for n, (lo, hi, _) in CSRCConstants.BOUNDS.items())
    with torch.no_grad():
        for p in c.parameters():
            p.fill_(-1e4)
    assert all(math.isclose(c.as_dict()[n], lo, rel_tol=1e-6, abs_tol=1e-9)
               for n, (lo, hi, _) in CSRCConstants.BOUNDS.items())


def test_constants_custom_init_and_errors():
    c = CSRCConstants(nu=0.1, L=-1.5, c_E=2.0)
    d = c.as_dict()
    assert math.isclose(d["nu"], 0.1, rel_tol=1e-5) and math.isclose(d["L"], -1.5, rel_tol=1e-5)
    assert math.isclose(d["c_E"], 2.0, rel_tol=1e-5)
    with pytest.raises(AssertionError, match="strictly inside"):
        CSRCConstants(kappa=20.0)
    with pytest.raises(AssertionError, match="unknown"):
        CSRCConstants(viscosity=0.1)
    assert len(list(c.parameters())) == 7


def test_constants_round_trip_through_state_dict():
    a, b = CSRCConstants(a_T=0.2), CSRCConstants()
    b.load_state_dict(a.state_dict())
    assert b.as_dict() == a.as_dict()


# ------------------------------------------------------------------------------------------ per category

def test_category_terms_cover_the_29_terms_in_table_order():
    assert tuple(CATEGORY_TERMS) == CATEGORIES
    names = [t for c in CATEGORIES for t in CATEGORY_TERMS[c]]
    assert len(names) == len(set(names)) == 29 and set(names) == set(TERMS)
    f, c = fields(2), CSRCConstants()
    seen = []
    for cat in CATEGORIES:
        terms = category_terms(cat, f, consts=c)
        assert tuple(terms) == CATEGORY_TERMS[cat]
        for v in terms.values():
            assert v.shape == (2,) and v.dtype == torch.float32 and torch.isfinite(v).all()
        assert torch.allclose(category_loss(cat, f, consts=c), torch.stack(list(terms.values())).sum(0))
        seen += list(terms)
    assert seen == names


def test_category_names_and_missing_fields():
    f, c = fields(1), CSRCConstants()
    ref = category_loss("Phase Change", f, consts=c)
    assert torch.equal(category_loss(4, f, consts=c), ref)
    assert torch.equal(category_loss("phase_change", f, consts=c), ref)
    only = {k: f[k] for k in category_fields("Thermal")}
    assert set(only) == {"T", "u"}
    category_loss("Thermal", only, consts=c)  # needs nothing else
    with pytest.raises(KeyError, match="alpha"):
        category_loss("Optical", {"psi": f["psi"]}, consts=c)
    with pytest.raises(AssertionError, match="u"):
        category_loss("Thermal", {"T": f["T"], "u": f["eps"]}, consts=c)  # 4 channels for a vector


def test_bf16_inputs_are_evaluated_in_fp32():
    f32, c = fields(2), CSRCConstants()
    f16 = {k: v.bfloat16() for k, v in f32.items()}
    for cat in CATEGORIES:
        lo = category_loss(cat, f16, consts=c)
        ref = category_loss(cat, {k: v.float() for k, v in f16.items()}, consts=c)
        assert lo.dtype == torch.float32 and torch.equal(lo, ref), cat


# ------------------------------------------------------------------------------------------ routed loss (Eq. 7)

def routing(B=4):
    """Dense weights over the top-3 of some logits; labels: sample 0 {0, 2}, 1 {7}, 2 {1, 5, 6}, 3 {} ."""
    logits = torch.tensor([[3.0, 1.0, 2.0, 0.5, 0.1, -1.0, 0.0, 0.2],
                           [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 3.0],
                           [0.0, 2.0, 0.0, 0.0, 0.0, 1.0, 1.5, 0.0],
                           [1.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.5]])[:B]
    top = logits.topk(3, dim=1).indices
    sel = torch.zeros_like(logits, dtype=torch.bool).scatter(1, top, True)
    weights = torch.where(sel, logits, torch.full_like(logits, -math.inf)).softmax(1)
    labels = torch.zeros_like(logits)
    for b, ks in enumerate([[0, 2], [7], [1, 5, 6], []][:B]):
        labels[b, ks] = 1
    return weights, labels, sel


def make_views(sel, *, seed=0, shape=SHAPE, dtype=torch.float32, grad=False):
    views = {}
    for k in range(8):
        idx = sel[:, k].nonzero().flatten()
        if len(idx):
            views[k] = (idx, fields(len(idx), seed=seed + k, shape=shape, dtype=dtype, grad=grad))
    return views


def expected_loss(views, weights, labels, consts, mask=None):
    per = []
    for b in range(weights.shape[0]):
        num, den = 0.0, 0.0
        for k, (idx, f) in views.items():
            hit = (idx == b).nonzero().flatten()
            if len(hit) and labels[b, k] > 0.5:
                i = int(hit[0])
                fb = {n: v[i:i + 1] for n, v in f.items()}
                mb = None if mask is None else mask[b:b + 1]
                num = num + weights[b, k] * category_loss(k, fb, consts=consts, mask=mb)[0]
                den = den + weights[b, k]
        if den:
            per.append(num / den)
    return torch.stack(per).mean()


def test_routed_loss_matches_eq7_by_hand():
    weights, labels, sel = routing()
    views, c = make_views(sel), CSRCConstants()
    loss, log = routed_csrc_loss(views, weights, labels, consts=c)
    ref = expected_loss(views, weights, labels, c)
    assert loss.shape == () and loss.dtype == torch.float32
    assert torch.allclose(loss, ref, rtol=1e-5), (loss, ref)
    # sample 0: selected {0, 2, 1}, labelled {0, 2} -> Rigid + Fluid; 1: Optical; 2: Elastic, Collision, Thermal
    for cat in ("Rigid Body", "Fluid", "Optical", "Elastic", "Collision", "Thermal"):
        assert f"csrc/{cat}" in log and not log[f"csrc/{cat}"].requires_grad
    assert "csrc/Compressible Flow" not in log  # selected by sample 3 but never labelled
    assert "csrc/fluid_momentum" in log


def test_only_selected_and_labelled_experts_count():
    weights, labels, sel = routing()
    views, c = make_views(sel), CSRCConstants()
    base, _ = routed_csrc_loss(views, weights, labels, consts=c)
    # selected but unlabelled (expert 1 for sample 0, expert 3 for sample 3): their fields do not matter
    for k in (1, 3):
        idx, f = views[k]
        off = (labels[idx, k] == 0).view(-1, 1, 1, 1, 1)
        assert off.any()
        views2 = dict(views)
        views2[k] = (idx, {n: torch.where(off, v * 7 + 3, v) for n, v in f.items()})
        assert torch.equal(routed_csrc_loss(views2, weights, labels, consts=c)[0], base)
    # ... while the labelled rows of the same expert do (sample 2 labels expert 1)
    idx, f = views[1]
    views2 = dict(views)
    views2[1] = (idx, {n: v * 7 + 3 for n, v in f.items()})
    assert not torch.equal(routed_csrc_loss(views2, weights, labels, consts=c)[0], base)
    # labelled but unselected (sample 2 labels 5, which it selected; label 4 it did not): adding the label
    # of an unselected expert changes nothing
    labels2 = labels.clone()
    labels2[0, 4] = 1
    assert torch.equal(routed_csrc_loss(views, weights, labels2, consts=c)[0], base)


def test_weights_are_renormalised_over_the_counted_set():
    weights, labels, sel = routing()
    views, c = make_views(sel), CSRCConstants()
    base, _ = routed_csrc_loss(views, weights, labels, consts=c)
    scaled = weights * torch.tensor([[3.0], [0.2], [5.0], [1.0]])
    assert torch.allclose(routed_csrc_loss(views, scaled, labels, consts=c)[0], base, rtol=1e-6)
    # moving weight onto an unlabelled expert leaves the relative weights of the labelled ones unchanged
    w2 = weights.clone()
    w2[0, 1] *= 10
    assert torch.allclose(routed_csrc_loss(views, w2, labels, consts=c)[0], base, rtol=1e-6)


def test_samples_without_a_counted_expert_are_excluded_from_the_average():
    weights, labels, sel = routing()
    views, c = make_views(sel), CSRCConstants()
    full, _ = routed_csrc_loss(views, weights, labels, consts=c)
    # sample 3 has no labels: the average is over samples 0..2 only
    sub = {k: (idx[idx < 3], {n: v[idx < 3] for n, v in f.items()}) for k, (idx, f) in views.items()}
    part, _ = routed_csrc_loss(sub, weights[:3], labels[:3], consts=c)
    assert torch.allclose(full, part, rtol=1e-6)
    per_sample = [routed_csrc_loss({k: (idx[idx == b] * 0, {n: v[idx == b] for n, v in f.items()})
                                    for k, (idx, f) in views.items() if (idx == b).any()},
                                   weights[b:b + 1], labels[b:b + 1], consts=c)[0] for b in range(3)]
    assert torch.allclose(full, torch.stack(per_sample).mean(), rtol=1e-5)


def test_no_counted_expert_gives_zero_with_a_gradient_path():
    weights, labels, sel = routing()
    w = weights.clone().requires_grad_(True)
    views = make_views(sel, grad=True)
    loss, log = routed_csrc_loss(views, w, torch.zeros_like(labels), consts=CSRCConstants())
    assert loss.item() == 0.0 and loss.requires_grad and log == {}
    loss.backward()
    assert torch.equal(w.grad, torch.zeros_like(w))


def test_gradients_reach_fields_router_weights_and_constants():
    weights, labels, sel = routing()
    w = weights.clone().requires_grad_(True)
    views, c = make_views(sel, grad=True), CSRCConstants()
    loss, _ = routed_csrc_loss(views, w, labels, consts=c)
    loss.backward()
    assert w.grad[0, [0, 2]].abs().min() > 0  # the renormalised weights of the counted experts
    assert w.grad[0, 1] == 0 and w.grad[3].abs().sum() == 0  # unlabelled / sample without a counted expert
    assert views[0][1]["sigma"].grad.abs().sum() > 0
    assert views[3][1]["p"].grad is None or views[3][1]["p"].grad.abs().sum() == 0  # never labelled
    used = {"c_E", "c_O", "nu", "a_T"}  # Elastic, Optical, Fluid, Thermal are counted
    for n in used:
        assert getattr(c, f"raw_{n}").grad.abs() > 0, n


def test_bf16_inputs_give_an_fp32_loss():
    weights, labels, sel = routing()
    views, c = make_views(sel), CSRCConstants()
    ref, _ = routed_csrc_loss(
        {k: (i, {n: v.bfloat16().float() for n, v in f.items()}) for k, (i, f) in views.items()},
        weights.bfloat16().float(), labels, consts=c)
    lo, _ = routed_csrc_loss({k: (i, {n: v.bfloat16() for n, v in f.items()}) for k, (i, f) in views.items()},
                             weights.bfloat16(), labels.bfloat16(), consts=c)
    assert lo.dtype == torch.float32 and torch.allclose(lo, ref, rtol=1e-6)


def test_physical_mask_is_indexed_per_sample():
    weights, labels, sel = routing()
    views, c = make_views(sel), CSRCConstants()
    mask = torch.rand(4, 1, *SHAPE, generator=torch.Generator().manual_seed(5))
    loss, _ = routed_csrc_loss(views, weights, labels, consts=c, mask=mask)
    assert torch.allclose(loss, expected_loss(views, weights, labels, c, mask=mask), rtol=1e-5)
    # zeroing sample 1's mask removes every term of its Optical expert
    m2 = mask.clone()
    m2[1] = 0
    terms = category_terms("Optical", {n: v[views[7][0] == 1] for n, v in views[7][1].items()}, consts=c,
                           mask=m2[1:2])
    assert all(float(v.detach()) == 0.0 for v in terms.values())


@pytest.mark.parametrize("shape", [(1, 9, 9), (2, 9, 9), (5, 3, 3), (1, 1, 1)])
def test_short_clips_and_tiny_frames_do_not_crash(shape):
    weights, labels, sel = routing()
    w = weights.clone().requires_grad_(True)
    views = make_views(sel, shape=shape, grad=True)
    loss, _ = routed_csrc_loss(views, w, labels, consts=CSRCConstants(), mask=torch.ones(4, 1, *shape))
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(w.grad).all()


def test_a_shared_mask_broadcasts_over_the_batch():
    weights, labels, sel = routing()
    views, c = make_views(sel), CSRCConstants()
    one = torch.rand(1, 1, *SHAPE, generator=torch.Generator().manual_seed(6))
    a, _ = routed_csrc_loss(views, weights, labels, consts=c, mask=one)
    b, _ = routed_csrc_loss(views, weights, labels, consts=c, mask=one.expand(4, -1, -1, -1, -1))
    assert torch.allclose(a, b, rtol=1e-6)
