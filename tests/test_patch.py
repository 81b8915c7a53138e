"""pila.steps and pila.patch: the ComfyUI wrapper logic, tested without ComfyUI (docs/method.md §1, §4, §8)."""
import pytest
import torch

from pila import PILAAdapter, gate
from pila.patch import CorrectionSettings, FlowCorrection, PILAPatchError, Recorder
from pila.steps import parse_steps, step_of_sigma


def tiny_adapter(seed=0):
    torch.manual_seed(seed)
    a = PILAAdapter(hidden=16)
    with torch.no_grad():  # the decoder's last conv is zero-initialised; make dv non-zero
        a.decoder.out.weight.normal_(0, 0.05)
        a.decoder.out.bias.normal_(0, 0.05)
    return a.eval()


def fake_executor(calls):
    def run(x, t, c_concat, c_crossattn, control, opts, **kw):
        calls.append(t.clone())
        return x * 0.5 + 0.1 * c_crossattn.mean()  # x0 depends on the per-row text, like a real model
    return run


def test_parse_steps():
    assert parse_steps("all").is_all and parse_steps("").is_all
    r = parse_steps("1-10, 21-30")
    assert r.steps(35) == list(range(1, 11)) + list(range(21, 31))
    assert parse_steps("5").steps(10) == [5]
    assert parse_steps("40-").steps(42) == [40, 41, 42]
    assert parse_steps("-3").steps(10) == [1, 2, 3]
    for bad in ("0-3", "5-2", "a", "1-2-3", ",", "1,,2"):
        with pytest.raises(ValueError, match="step range"):
            parse_steps(bad)


def test_step_of_sigma():
    sched = torch.tensor([1.0, 0.9, 0.6, 0.3, 0.0])  # 4 steps
    assert [step_of_sigma(float(s), sched) for s in sched[:-1]] == [1, 2, 3, 4]
    assert step_of_sigma(0.75, sched) == 2  # a mid-step call (multi-stage sampler) belongs to its step
    assert step_of_sigma(1.2, sched) == 1


def test_correction_matches_eq10_and_ignores_uncond_text():
    a = tiny_adapter()
    text = torch.randn(1, 7, 4096)
    text[:, 5:] = 0  # UMT5 padding rows
    labels = torch.tensor([0, 0, 1, 0, 0, 0, 0, 0.0])
    st = CorrectionSettings(strength=0.7, gate_floor=0.1)
    patch = FlowCorrection(a, st, text=text, labels=labels)
    x = torch.randn(2, 16, 3, 8, 8)
    t = torch.tensor([0.6, 0.6])
    ctx = torch.randn(2, 7, 4096)
    calls = []
    out = patch(fake_executor(calls), x, t, None, ctx, None, {"cond_or_uncond": [0, 1]})
    assert len(calls) == 1, "the wrapped model must run once per call"
    x0 = x * 0.5 + 0.1 * ctx.mean()
    v = (x - x0) / 0.6
    pooled = text[:, :5].mean(1)
    dv = a(x, t, v, text_states=pooled.expand(2, -1), labels=labels[None].expand(2, -1))
    expect = x0 - 0.6 * 0.7 * gate(torch.tensor(0.6), 0.1) * dv
    torch.testing.assert_close(out, expect, rtol=1e-5, atol=1e-6)
    assert (out - x0).abs().max() > 1e-4, "a non-zero adapter must change x0"
    # both rows use the same physics condition: rows with equal x and sigma get equal dv
    x2 = x[:1].expand(2, -1, -1, -1, -1).contiguous()
    out2 = patch(lambda *a_, **k: x2 * 0.5, x2, t, None, ctx, None, {"cond_or_uncond": [0, 1]})
    torch.testing.assert_close(out2[0], out2[1])


def test_strength_zero_and_step_range_are_bit_exact_passthrough():
    a = tiny_adapter()
    x = torch.randn(1, 16, 2, 8, 8)
    t = torch.tensor([0.5])
    sched = torch.tensor([1.0, 0.5, 0.2, 0.0])
    ctx = torch.randn(1, 4, 4096)
    rec = Recorder()
    zero = FlowCorrection(a, CorrectionSettings(strength=0.0), recorder=rec)
    x0 = x * 0.5 + 0.1 * ctx.mean()
    out = zero(fake_executor([]), x, t, None, ctx, None, {"sample_sigmas": sched, "cond_or_uncond": [0]})
    assert torch.equal(out, x0)
    ranged = FlowCorrection(a, CorrectionSettings(strength=1.0, steps="1,3"), recorder=rec)
    opts = {"sample_sigmas": sched, "cond_or_uncond": [0]}
    outs = [ranged(fake_executor([]), x, torch.tensor([s]), None, ctx, None, opts) for s in (1.0, 0.5, 0.2)]
    assert not torch.equal(outs[0], x * 0.5 + 0.1 * ctx.mean())
    assert torch.equal(outs[1], x0), "step 2 is outside '1,3' and must pass through unchanged"
    assert not torch.equal(outs[2], x * 0.5 + 0.1 * ctx.mean())
    summ = rec.summary()
    assert [c["step"] for c in summ] == [1, 2, 3] and [c["applied"] for c in summ] == [True, False, True]
    assert [c["sigma"] for c in summ] == [[1.0], [0.5], [0.2]]


def test_sigma_zero_row_is_safe():
    a = tiny_adapter()
    x = torch.randn(2, 16, 2, 8, 8)
    out = FlowCorrection(a)(lambda *a_, **k: x * 0.9, x, torch.tensor([0.0, 0.4]), None, torch.randn(2, 3, 4096), None, {})
    assert torch.isfinite(out).all()
    assert torch.equal(out[0], x[0] * 0.9), "a row at sigma 0 is returned uncorrected"


def test_unservable_latents_raise_clear_errors():
    a = tiny_adapter()
    patch = FlowCorrection(a)
    ex = lambda x, *a_, **k: x  # noqa: E731
    with pytest.raises(PILAPatchError, match="48-channel Wan 2.2"):
        patch(ex, torch.randn(1, 48, 2, 8, 8), torch.tensor([0.5]), None, None, None, {})
    with pytest.raises(PILAPatchError, match="video latents"):
        patch(ex, torch.randn(1, 16, 8, 8), torch.tensor([0.5]), None, None, None, {})
    with pytest.raises(PILAPatchError, match="4096"):
        FlowCorrection(a, text=torch.randn(1, 5, 768))


def test_recorder_keeps_maps_and_diagnostics_render():
    from pila.diagnostics import expert_change_images, router_weights_image

    a = tiny_adapter()
    rec = Recorder(keep_maps=True)
    patch = FlowCorrection(a, CorrectionSettings(top_k=2), recorder=rec, labels=torch.eye(8)[1])
    sched = torch.tensor([1.0, 0.5, 0.0])
    x = torch.randn(2, 16, 2, 6, 6)
    for s in (1.0, 0.5):
        patch(lambda x_, *a_, **k: x_ * 0.5, x, torch.tensor([s, s]), None, None, None,
              {"sample_sigmas": sched, "cond_or_uncond": [1, 0]})
    assert len(rec.calls) == 2 and (rec.calls[0].weights > 0).sum(dim=1).tolist() == [2, 2]
    maps = expert_change_images(rec)
    weights = router_weights_image(rec)
    assert maps.shape[0] == 2 and maps.shape[-1] == 3 and weights.shape[0] == 1
    assert 0 <= float(maps.min()) and float(maps.max()) <= 1 and float(maps.std()) > 0
