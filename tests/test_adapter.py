"""PILAAdapter end to end (docs/method.md §1, §3, §4, §6): zero init, gradients, dtypes, batches, tiny grids."""
import pytest
import torch
from torch.nn import functional as F

from pila import PILAAdapter, PILAConfig, apply_correction, gate, pool_text

TINY = dict(hidden=16, groups=4, text_dim=32, latent_channels=3)


def _adapter(seed=0, **kw):
    torch.manual_seed(seed)
    return PILAAdapter(**{**TINY, **kw})


def _inputs(B=2, T=5, H=8, W=8, C=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, T, H, W, generator=g)
    return x, torch.rand(B, generator=g), torch.randn(B, C, T, H, W, generator=g), torch.randn(B, 6, 32, generator=g)


def _wake_decoder(a, seed=3):
    """Make the zero-initialised last conv non-zero so dv depends on everything."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        a.decoder.out.weight.copy_(torch.randn(a.decoder.out.weight.shape, generator=g) * 0.1)


def test_config_overrides():
    a = PILAAdapter(PILAConfig(hidden=32, groups=4, text_dim=8), latent_channels=3, top_k=2)
    assert (a.config.hidden, a.config.latent_channels, a.config.top_k) == (32, 3, 2)
    assert a.decoder.out.out_channels == 3


def test_fresh_adapter_returns_exact_zero():
    a = _adapter()
    x, s, v, text = _inputs()
    labels = torch.tensor([[1, 0, 1, 0, 0, 0, 0, 0], [0] * 8], dtype=torch.float32)
    dv = a(x, s, v, text, labels=labels)
    assert dv.shape == x.shape and torch.equal(dv, torch.zeros_like(dv))
    assert torch.equal(apply_correction(v, dv, s), v)


def test_gate_and_correction():
    assert gate(1.0) == pytest.approx(0.05) and gate(0.0) == pytest.approx(1.0)
    assert gate(0.5, floor=0.1) == pytest.approx(0.1 + 0.9 * 0.25)
    v, dv = torch.zeros(2, 1, 1, 1, 1), torch.ones(2, 1, 1, 1, 1)
    out = apply_correction(v, dv, torch.tensor([0.0, 1.0]), strength=2.0)
    assert out.flatten().tolist() == pytest.approx([2.0, 0.1])
    assert torch.allclose(apply_correction(v, dv, 0.5), gate(torch.tensor(0.5)).expand(2, 1, 1, 1, 1))


def test_pool_text_ignores_padding_and_masked_rows():
    t = torch.zeros(2, 4, 3)
    t[0, :2] = torch.tensor([[1.0, 2, 3], [3.0, 4, 5]])
    t[1, :3] = torch.tensor([[1.0, 1, 1], [2.0, 2, 2], [9.0, 9, 9]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    p = pool_text(t, mask)
    assert torch.allclose(p, torch.tensor([[2.0, 3, 4], [1.5, 1.5, 1.5]]))
    assert torch.equal(pool_text(p), p)
    assert torch.equal(pool_text(None, batch=2, dim=5), torch.zeros(2, 5))
    assert torch.equal(pool_text(torch.zeros(1, 3, 2)), torch.zeros(1, 2))  # all padding: zeros, not NaN


def test_training_step_reaches_every_parameter():
    a = _adapter()
    _wake_decoder(a)
    x0 = torch.randn(2, 3, 5, 8, 8)
    noise = torch.randn_like(x0)
    s = torch.tensor([0.3, 0.6])
    x_t = (1 - s.view(-1, 1, 1, 1, 1)) * x0 + s.view(-1, 1, 1, 1, 1) * noise
    v = noise - x0 + 0.3 * torch.randn_like(x0)  # an imperfect frozen backbone
    labels = torch.ones(2, 8)  # every expert selected (k = 8) and labelled: every CSRC constant is used
    out = a(x_t, s, v, torch.randn(2, 6, 32), labels=labels, top_k=8, return_aux=True, compute_residuals=True)
    v_phys = apply_correction(v, out.dv, s)
    g = gate(s).view(-1, 1, 1, 1, 1)
    loss = F.mse_loss(v_phys, noise - x0) + 0.3 * out.losses["csrc"] + 0.01 * (g * out.dv).square().mean()
    loss.backward()
    assert torch.isfinite(loss)
    names = [n for n, p in a.named_parameters()
             if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert not names, f"no gradient reaches {names}"
    groups = a.param_groups()
    assert sum(len(g) for g in groups.values()) == len(list(a.parameters()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dtypes_run(dtype):
    a = _adapter().to(dtype)
    _wake_decoder(a)
    a.to(dtype)
    x, s, v, text = _inputs()
    out = a(x, s, v, text, labels=torch.eye(8)[:2], return_aux=True, compute_residuals=True)
    assert out.dv.dtype == dtype and out.refined.dtype == dtype
    assert torch.isfinite(out.dv).all() and out.dv.abs().sum() > 0
    assert out.losses["csrc"].dtype == torch.float32 and torch.isfinite(out.losses["csrc"])
    out.losses["csrc"].backward()


def test_fp32_weights_under_bf16_autocast():
    """The trainer keeps fp32 weights and runs the step under bf16 autocast."""
    a = _adapter()
    _wake_decoder(a)
    x, s, v, text = _inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = a(x, s, v, text, labels=torch.ones(2, 8), top_k=8, return_aux=True, compute_residuals=True)
        loss = out.dv.float().square().mean() + out.losses["csrc"]
    loss.backward()
    assert torch.isfinite(loss) and out.losses["csrc"].dtype == torch.float32
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in a.parameters())


def test_batch_rows_are_independent_cond_uncond():
    """CFG runs cond and uncond rows in one batch with one shared physics description."""
    a = _adapter()
    _wake_decoder(a)
    x, s, v, _ = _inputs(B=2)
    s = torch.full((2,), 0.4)
    text = torch.randn(1, 6, 32)  # one description, used for both rows
    labels = torch.tensor([0, 0, 1, 0, 0, 0, 0, 0.0])
    both = a(x, s, v, text, labels=labels)
    rows = [a(x[i:i + 1], s[i:i + 1], v[i:i + 1], text, labels=labels) for i in range(2)]
    assert torch.allclose(both, torch.cat(rows), atol=1e-5)
    assert not torch.allclose(both[0], both[1])


def test_sigma_float_or_vector():
    a = _adapter()
    _wake_decoder(a)
    x, _, v, text = _inputs()
    assert torch.equal(a(x, 0.25, v, text), a(x, torch.tensor([0.25, 0.25]), v, text))


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 2, 2), (2, 1, 3)])
def test_tiny_grids(shape):
    a = _adapter()
    _wake_decoder(a)
    x = torch.randn(2, 3, *shape)
    out = a(x, 0.5, torch.randn_like(x), None, labels=torch.ones(2, 8), return_aux=True, compute_residuals=True)
    assert out.dv.shape == x.shape and torch.isfinite(out.dv).all()
    assert torch.isfinite(out.losses["csrc"])


def test_wan_channels_and_defaults():
    a = PILAAdapter(hidden=16, groups=4, text_dim=64)
    x = torch.randn(2, 16, 2, 4, 4)
    assert a(x, 0.9, torch.randn_like(x)).shape == x.shape


def test_nan_scrub_and_clamp():
    a = _adapter()
    with torch.no_grad():
        a.decoder.out.bias.fill_(100.0)
    x, s, v, text = _inputs()
    dv = a(x, s, v, text)
    assert torch.equal(dv, torch.full_like(dv, a.config.dv_clamp))
    x[0, 0, 0, 0, 0] = float("nan")
    _wake_decoder(a)
    dv = a(x, s, v, text)
    assert torch.isfinite(dv).all() and dv.abs().max() <= a.config.dv_clamp


def test_aux_outputs_shapes():
    a = _adapter()
    x, s, v, text = _inputs(B=2, T=3, H=4, W=4)
    out = a(x, s, v, text, top_k=3, return_aux=True)
    assert out.h.shape == (2, 16, 3, 4, 4) and out.c.shape == (2, 16)
    assert out.scaffold.shape == out.bank.shape == out.refined.shape == (2, 32, 3, 4, 4)
    assert out.u.shape == (2, 2, 3, 4, 4) and out.expert_change.shape == (2, 8, 3, 4, 4)
    assert out.logits.shape == out.weights.shape == (2, 8) and out.selected.shape == (2, 3)
    assert out.losses == {}


def test_cat_conv1x1_equals_conv_of_the_broadcast_concatenation():
    from pila.encoder import cat_conv1x1, conv1x1

    torch.manual_seed(0)
    conv = conv1x1(4 + 3 + 2, 5)
    h, c, b = torch.randn(2, 4, 3, 2, 5), torch.randn(2, 3), torch.randn(2, 2, 3, 2, 5)
    full = torch.cat([h, c[:, :, None, None, None].expand(-1, -1, 3, 2, 5), b], dim=1)
    assert torch.allclose(cat_conv1x1(conv, [h, c, b]), conv(full), atol=1e-5)


def test_clean_estimate_is_eq1():
    a = _adapter()
    x, s, v, text = _inputs()
    out = a(x, s, v, text, return_aux=True)
    assert torch.allclose(out.x0_hat, x - s.view(-1, 1, 1, 1, 1) * v, atol=1e-6)


def test_csrc_labels_and_mask_function():
    a = _adapter()
    x, s, v, text = _inputs()
    labels = torch.ones(2, 8)
    seen = []

    def mask_fn(out):
        seen.append(out.refined.shape)
        return torch.ones(2, 1, *x.shape[2:])

    full = a(x, s, v, text, labels=labels, top_k=8, compute_residuals=True, physical_mask=mask_fn)
    assert seen == [(2, 32, *x.shape[2:])] and full.losses["csrc"] > 0
    none = a(x, s, v, text, labels=labels, top_k=8, compute_residuals=True, csrc_labels=torch.zeros(2, 8))
    assert none.losses["csrc"] == 0 and torch.equal(none.selected, full.selected)  # routing still sees labels
    half = a(x, s, v, text, labels=labels, top_k=8, compute_residuals=True,
             csrc_labels=torch.tensor([[1.0] * 8, [0.0] * 8]))
    row0 = a(x[:1], s[:1], v[:1], text[:1], labels=labels[:1], top_k=8, compute_residuals=True)
    assert torch.allclose(half.losses["csrc"], row0.losses["csrc"], rtol=1e-4)


@pytest.mark.parametrize("k", [0, 3])
def test_bench_flop_count_matches_a_real_call(k):
    """pila.bench counts routed experts as `k x (one expert on the batch)` on meta tensors; check it against
    FlopCounterMode on a real call with data-dependent routing."""
    from torch.utils.flop_counter import FlopCounterMode

    from pila.bench import adapter_flops

    cfg = PILAConfig(**TINY)
    size = (3, 4, 5)
    a = _adapter()
    x = torch.randn(2, 3, *size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        a(x, torch.rand(2), torch.randn_like(x), torch.randn(2, 6, 32), labels=torch.eye(8)[:2], top_k=k)
    assert adapter_flops(cfg, k=k, size=size)[0] == counter.get_total_flops()
