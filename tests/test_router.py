"""LPMER routing and the operator experts (docs/method.md §4)."""
import pytest
import torch

from pila import PILAAdapter, category_index, multi_hot
from pila.bank import slot_mask
from pila.router import route
from pila.taxonomy import CATEGORIES, RECIPES


def test_label_prior_moves_the_top_k():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0, -0.5, -1.0, -1.5]])
    y = multi_hot(["Optical"])[None]
    assert 7 not in route(logits, y, top_k=4, prior_strength=0.0).selected[0].tolist()
    r = route(logits, y, top_k=4, prior_strength=6.0)
    assert r.selected[0, 0].item() == 7  # prior 6 lifts -1.5 to 4.5, the best
    assert r.logits[0, 7].item() == pytest.approx(4.5)
    # lambda = 2: -1.5 + 2 = 0.5 enters a top-4 of (4, 3, 2, 1, 0.5) only when k = 5
    assert 7 not in route(logits, y, top_k=4).selected[0].tolist()
    assert 7 in route(logits, y, top_k=5).selected[0].tolist()


def test_excluded_experts_are_never_selected():
    torch.manual_seed(0)
    logits = torch.randn(64, 8) * 3
    y = (torch.rand(64, 8) > 0.5).float()
    for exclude in (["Fluid", 6], ["rigid_body", "Elastic", "Collision"]):
        r = route(logits, y, top_k=4, prior_strength=10.0, exclude=exclude)
        banned = {category_index(e) for e in exclude}
        assert not set(r.selected.flatten().tolist()) & banned
        assert (r.weights[:, sorted(banned)] == 0).all()


def test_weights_are_a_softmax_over_the_selected():
    torch.manual_seed(1)
    logits, y = torch.randn(5, 8), (torch.rand(5, 8) > 0.7).float()
    r = route(logits, y, top_k=3, temperature=2.0)
    assert r.selected.shape == (5, 3)
    assert torch.allclose(r.weights.sum(1), torch.ones(5))
    assert ((r.weights > 0).sum(1) == 3).all()
    lp = logits + 2.0 * y
    expect = torch.softmax(lp.gather(1, r.selected) / 2.0, dim=1)
    assert torch.allclose(r.weights.gather(1, r.selected), expect)
    sharp = route(logits, y, top_k=3, temperature=0.1)
    assert (sharp.weights.max(1).values > r.weights.max(1).values).all()


def test_k_edge_cases():
    logits = torch.randn(2, 8)
    r0 = route(logits, top_k=0)
    assert r0.selected.shape == (2, 0) and (r0.weights == 0).all()
    r = route(logits, top_k=8, exclude=range(6))  # only 2 experts allowed
    assert r.selected.shape == (2, 2) and set(r.selected.flatten().tolist()) <= {6, 7}
    assert route(logits, top_k=3, exclude=range(8)).selected.shape == (2, 0)
    # empty labels: still the top-k of the logits
    r = route(logits, torch.zeros(2, 8), top_k=2)
    assert torch.equal(r.selected, logits.topk(2, dim=1).indices)


def _adapter(**kw):
    torch.manual_seed(0)
    return PILAAdapter(hidden=16, groups=4, text_dim=8, latent_channels=3, **kw)


def _inputs(B=3, T=3, H=4, W=4):
    x = torch.randn(B, 3, T, H, W)
    return x, torch.rand(B), torch.randn_like(x), torch.randn(B, 5, 8)


def test_only_selected_experts_run_on_their_samples():
    a = _adapter()
    calls = {k: [] for k in range(8)}
    for k, e in enumerate(a.experts.experts):
        e.register_forward_hook(lambda m, args, out, k=k: calls[k].append(args[0].shape[0]))
    x, s, v, text = _inputs()
    labels = torch.stack([multi_hot(["Fluid"]), multi_hot(["Optical", "Thermal"]), multi_hot([])])
    out = a(x, s, v, text, labels=labels, top_k=2, return_aux=True)
    sel = out.selected
    for k in range(8):
        n = int((sel == k).any(1).sum())
        assert calls[k] == ([n] if n else []), f"expert {k}: calls {calls[k]}, selected by {n} samples"
    assert sum(sum(c) for c in calls.values()) == 3 * 2
    # per-pixel change maps are zero exactly for the unselected experts
    unselected = torch.ones(3, 8, dtype=torch.bool).scatter(1, sel, False)
    assert (out.expert_change[unselected] == 0).all()
    assert (out.expert_change.flatten(2).sum(-1)[~unselected] > 0).all()


def test_top_k_override_and_zero():
    a = _adapter(top_k=4)
    x, s, v, text = _inputs(B=2)
    assert a(x, s, v, text, return_aux=True).selected.shape == (2, 4)
    assert a(x, s, v, text, top_k=1, return_aux=True).selected.shape == (2, 1)
    out = a(x, s, v, text, top_k=0, return_aux=True)
    assert out.selected.shape == (2, 0) and torch.equal(out.refined, out.bank)


def test_experts_change_only_their_recipe_slots():
    a = _adapter()
    x, s, v, text = _inputs(B=1)
    for k, cat in enumerate(CATEGORIES):
        out = a(x, s, v, text, top_k=1, exclude=[i for i in range(8) if i != k], return_aux=True)
        assert out.selected.tolist() == [[k]]
        changed = (out.refined - out.bank).abs().amax(dim=(0, 2, 3, 4)) > 0
        assert torch.equal(changed, slot_mask(RECIPES[cat]).bool()), cat


def test_router_excludes_through_the_adapter():
    a = _adapter()
    x, s, v, text = _inputs(B=4)
    out = a(x, s, v, text, labels=torch.ones(4, 8), top_k=8, exclude=["Fluid", "Optical"], return_aux=True)
    assert out.selected.shape == (4, 6)
    assert not {2, 7} & set(out.selected.flatten().tolist())
    assert torch.allclose(out.weights.sum(1), torch.ones(4))
