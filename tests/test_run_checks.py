"""The correction's per-run checks (pure PyTorch): a step range or start/end percent that leaves no step of a run
to correct is reported before the run; sigma limits follow the core model-patch nodes (end <= sigma <= start);
dv values the adapter had to scrub of NaN are counted over a run and reported once after it."""
from __future__ import annotations

import torch

from pila import PILAAdapter
from pila.patch import CorrectionSettings, FlowCorrection

SCHEDULE = torch.tensor([1.0, 0.96, 0.889, 0.7, 0.0])  # 4 steps


def adapter(nan: bool = False):
    torch.manual_seed(0)
    a = PILAAdapter(hidden=16)
    with torch.no_grad():
        a.decoder.out.weight.normal_(0, 0.05)
        a.decoder.out.bias.fill_(float("nan") if nan else 0.01)
    return a.eval()


def identity_x0(x, t, *args, **kw):
    return x * 0.5


def run(patch: FlowCorrection, sigmas=SCHEDULE) -> list[bool]:
    """One Euler-like run: a model call per step at that step's sigma; True where x0 was changed."""
    changed = []
    for s in sigmas[:-1]:
        x = torch.randn(1, 16, 2, 4, 4)
        out = patch(identity_x0, x, s.reshape(1), None, None, None, {"sample_sigmas": sigmas, "cond_or_uncond": [0]})
        changed.append(not torch.equal(out, x * 0.5))
    return changed


def test_step_range_matching_no_step_is_reported_before_the_run():
    patch = FlowCorrection(adapter(), CorrectionSettings(steps="50-60"), name="PILA Flow Correction")
    msg = patch.begin_run(SCHEDULE)
    assert msg and "'50-60'" in msg and "steps 1..4" in msg and "does nothing" in msg
    assert run(patch) == [False] * 4
    assert FlowCorrection(adapter(), CorrectionSettings(steps="3-60")).begin_run(SCHEDULE) is None
    assert FlowCorrection(adapter(), CorrectionSettings(steps="50-60", strength=0.0)).begin_run(SCHEDULE) is None


def test_sigma_range_from_percents_selects_steps_like_core_nodes():
    # sigma_start 0.923 (between 0.96 and 0.889), sigma_end 0.0: steps 3 and 4
    patch = FlowCorrection(adapter(), CorrectionSettings(start_percent=0.4), sigma_range=(0.923, 0.0))
    assert patch.begin_run(SCHEDULE) is None
    assert run(patch) == [False, False, True, True]
    # a window no step falls in: reported
    empty = FlowCorrection(adapter(), CorrectionSettings(start_percent=0.1, end_percent=0.15), sigma_range=(0.99, 0.97))
    assert "start/end percent 0.1-0.15" in empty.begin_run(SCHEDULE)
    assert run(empty) == [False] * 4


def test_nan_scrubbed_dv_is_counted_over_a_run_and_reported_once():
    patch = FlowCorrection(adapter(nan=True), CorrectionSettings(), name="PILA")
    assert patch.begin_run(SCHEDULE) is None
    run(patch)
    msg = patch.end_run()
    assert msg and f"{4 * 16 * 2 * 4 * 4} non-finite" in msg, msg  # every dv value of 4 calls
    assert patch.end_run() is None, "reported once per run"
    clean = FlowCorrection(adapter(), CorrectionSettings())
    clean.begin_run(SCHEDULE)
    run(clean)
    assert clean.end_run() is None
