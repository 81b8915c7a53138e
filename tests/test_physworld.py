"""The physics world: analytic physics, the motion metric (plausible-size detection, the undetected-step penalty,
the failure baselines), realised-speed splits, the bootstrap, FLOP counts and the smoke experiment."""
import io
import json
import math
import tarfile

import numpy as np
import pytest
import torch

from training import physworld as pw

CFG = pw.WorldConfig()


@pytest.mark.parametrize("scenario", pw.SCENARIOS)
def test_ground_truth_is_at_the_floor(scenario):
    clips = pw.make_clips(scenario, 24, seed=3, cfg=CFG)
    for mode in ("blob", "frame"):
        m = pw.motion_metrics(clips.video, clips, CFG, mode=mode)
        assert float(m["vel_err"].max()) < 0.06, f"{scenario}/{mode}: ground truth velocity error {m['vel_err'].max()}"
        assert float(m["pos_err"].max()) < 0.06
        assert float(m["det_rate"].min()) == 1.0


def _moving_ball(T=16, shift=(0.0, 0.0), drift=(0.0, 0.0)):
    """One ball crossing the middle of the frame; generated frames offset by `shift` + (t - c + 1) * `drift`."""
    t = torch.arange(T, dtype=torch.float32)
    pos = torch.stack([10 + 0.5 * t, 9 + 0.3 * t], -1)[None, :, None]  # [1, T, 1, 2]
    pos = torch.cat([pos, torch.zeros_like(pos)], 2)  # slot 2 absent
    radius, present = torch.tensor([[3.0, 1.0]]), torch.tensor([[True, False]])
    k = (t - (CFG.cond_frames - 1)).clamp_min(0)[None, :, None, None]
    gen = (t >= CFG.cond_frames)[None, :, None, None].float()
    moved = pos + gen * torch.tensor(shift) + k * torch.tensor(drift)
    truth = pw.Clips(pw.render(pos, radius, present, CFG), pos, torch.zeros_like(pos), radius, torch.ones(1, 2),
                     present, torch.zeros(1, 8), ["uniform"])
    return truth, pw.render(moved, radius, present, CFG)


def test_shifted_copy_error_equals_the_shift():
    truth, video = _moving_ball(shift=(1.2, -0.9))
    m = pw.motion_metrics(video, truth, CFG)
    assert torch.allclose(m["pos_err"], torch.full_like(m["pos_err"], 1.5), atol=0.05), m["pos_err"]
    # a constant shift is one jump: |shift| once over the generated frames
    assert math.isclose(float(m["vel_err"]), 1.5 / (CFG.frames - CFG.cond_frames), abs_tol=0.02)


def test_velocity_error_equals_a_velocity_offset():
    truth, video = _moving_ball(drift=(0.3, 0.4))  # every generated step moves 0.5 px more than the truth
    m = pw.motion_metrics(video, truth, CFG)
    assert math.isclose(float(m["vel_err"]), 0.5, abs_tol=0.03), m["vel_err"]
    expect = 0.5 * torch.arange(1, CFG.frames - CFG.cond_frames + 1)
    assert torch.allclose(m["pos_err"][0], expect, atol=0.05)


def test_largest_blob_ignores_a_stray_blob():
    truth, video = _moving_ball()
    video = video.clone()
    red = torch.tensor(CFG.ball_colours[0]) * 2 - 1
    video[0, :, CFG.cond_frames:, 26:28, 26:28] = red.view(3, 1, 1, 1)  # a 4-pixel red speck far from the ball
    blob = pw.motion_metrics(video, truth, CFG, mode="blob")
    frame = pw.motion_metrics(video, truth, CFG, mode="frame")
    assert float(blob["pos_err"].max()) < 0.05
    assert float(frame["pos_err"].min()) > 0.5


def test_undetected_steps_cost_the_stated_penalty():
    truth, video = _moving_ball()
    video = video.clone()
    video[:, :, CFG.cond_frames:] = video[:, :, :1, :1, :1]  # every generated frame is background
    m = pw.motion_metrics(video, truth, CFG)
    assert float(m["det_rate"]) == 0.0
    assert math.isclose(float(m["vel_err"]), 0.5214 * CFG.size, rel_tol=1e-6)  # no step detected: all charged
    assert math.isnan(float(m["vel_err_found"]))
    # the ball lost in one generated frame: the two steps touching it are charged, the others measured (exact)
    truth, video = _moving_ball()
    video = video.clone()
    video[:, :, CFG.cond_frames + 4] = video[:, :, 0, :1, :1]
    m = pw.motion_metrics(video, truth, CFG)
    n = CFG.frames - CFG.cond_frames
    assert math.isclose(float(m["det_rate"]), (n - 1) / n, abs_tol=1e-6)
    assert math.isclose(float(m["vel_err"]), 2 * CFG.penalty / n, abs_tol=0.03)
    assert float(m["vel_err_found"]) < 0.03


def test_a_smear_or_a_speck_is_not_a_ball():
    """Detection needs a blob of 0.5x-2x the ball's area: a ball drawn at 1.5x its radius (2.25x the area) or at
    0.5x its radius is not found, one at 1.2x its radius is."""
    t = torch.arange(CFG.frames, dtype=torch.float32)
    pos = torch.stack([10 + 0.5 * t, 9 + 0.3 * t], -1)[None, :, None].expand(1, -1, 2, -1).contiguous()
    present = torch.tensor([[True, False]])
    truth_r = torch.tensor([[3.0, 1.0]])
    truth = pw.Clips(pw.render(pos, truth_r, present, CFG), pos, torch.zeros_like(pos), truth_r, torch.ones(1, 2),
                     present, torch.zeros(1, 8), ["uniform"])
    for scale, found in ((1.5, False), (0.5, False), (1.2, True), (0.85, True)):
        video = pw.render(pos, truth_r * scale, present, CFG)
        for mode in ("blob", "frame"):
            m = pw.motion_metrics(video, truth, CFG, mode=mode)
            assert float(m["det_rate"]) == float(found), (scale, mode, m["det_rate"])


@pytest.mark.parametrize("scenario", pw.SCENARIOS)
@pytest.mark.parametrize("size,frames", [(32, 16), (16, 8)])
def test_erased_and_speckle_score_worse_than_every_trivial_baseline(scenario, size, frames):
    """The metric punishes losing the ball: through the same detector as every arm, an erased ball and speckle
    both score about the stated penalty (what guessing the position scores), far above copying the last frame
    and constant-velocity extrapolation, and far above the ground truth; neither is 'detected' in most frames."""
    cfg = pw.WorldConfig(size=size, frames=frames)
    clips = pw.make_clips(scenario, 24, seed=11, cfg=cfg)
    m = {n: pw.motion_metrics(f(clips, cfg), clips, cfg) for n, f in pw.BASELINES.items()}
    assert float(m["ground_truth"]["det_rate"].min()) == 1.0
    for bad in ("erased", "speckle"):
        err = float(m[bad]["vel_err"].mean())
        assert err > 0.85 * cfg.penalty, (bad, err)
        for good in ("copy_last_frame", "constant_velocity"):
            assert err > 3 * float(m[good]["vel_err"].mean()), (bad, good)
    assert float(m["erased"]["det_rate"].max()) == 0.0
    assert float(m["speckle"]["det_rate"].mean()) < 0.8


def test_ood_speed_is_disjoint_by_realised_speed():
    """Every ood_speed clip moves faster (mean |p[t+1] - p[t]|, recomputed here from the positions) than every clip
    of every other split and scenario: the training data of every arm included."""
    for cfg in (CFG, pw.WorldConfig(size=16, frames=8)):
        inside, ood = [], []
        for s in pw.SCENARIOS:
            for split in pw.splits_for(s):
                w = pw.sample_world(s, 64, seed=4, split=split, cfg=cfg)
                d = (w["pos"][:, 1:] - w["pos"][:, :-1]).norm(dim=-1)  # [B, T-1, K]
                pres = w["present"][:, None, :].float()
                speed = (d * pres).sum((1, 2)) / (pres.sum((1, 2)) * d.shape[1])
                assert torch.allclose(speed, w["realised_speed"], atol=1e-4)
                (ood if split == "ood_speed" else inside).append(speed)
        assert float(torch.cat(ood).min()) > float(torch.cat(inside).max())


def test_trivial_baselines():
    clips = pw.make_clips("uniform", 32, seed=5, cfg=CFG)
    copy = pw.motion_metrics(pw.copy_last_frame(clips, CFG), clips, CFG)
    speed = clips.vel[:, 0, 0].norm(dim=-1)
    assert torch.allclose(copy["vel_err"], speed, atol=0.06)
    const = pw.motion_metrics(pw.constant_velocity(clips, CFG), clips, CFG)
    assert float(const["vel_err"].max()) < 0.06  # uniform motion is exactly constant velocity
    bounce = pw.make_clips("bounce", 32, seed=5, cfg=CFG)
    assert float(pw.motion_metrics(pw.constant_velocity(bounce, CFG), bounce, CFG)["vel_err"].mean()) > 0.2


def test_bootstrap_known_cases():
    a = np.linspace(0, 1, 50)
    r = pw.paired_bootstrap(a + 0.3, a, n_boot=500)
    assert r["diff"] == pytest.approx(0.3) and r["lo"] == pytest.approx(0.3) and r["hi"] == pytest.approx(0.3)
    assert r["improved"] == 0.0
    # coverage of a known mean difference (0.2) at the nominal level
    rng = np.random.default_rng(0)
    hits = 0
    for i in range(200):
        b = rng.normal(size=40)
        a = b + 0.2 + rng.normal(size=40)
        r = pw.paired_bootstrap(a, b, n_boot=400, seed=i)
        hits += r["lo"] <= 0.2 <= r["hi"]
    assert 0.88 <= hits / 200 <= 0.99, hits


@pytest.mark.parametrize("mass_mode", ["equal", "area"])
def test_elastic_collision_conserves_energy_and_momentum(mass_mode):
    cfg = pw.WorldConfig(mass_mode=mass_mode)
    w = pw.sample_world("collision", 64, seed=1, cfg=cfg)
    m = w["mass"][:, None, :, None]
    p_first, p_last = (m * w["vel"])[:, 0].sum(1), (m * w["vel"])[:, -1].sum(1)
    e_first, e_last = (0.5 * m * w["vel"] ** 2).sum((-1, -2))[:, 0], (0.5 * m * w["vel"] ** 2).sum((-1, -2))[:, -1]
    assert torch.allclose(p_first, p_last, atol=1e-5) and torch.allclose(e_first, e_last, atol=1e-5)
    assert (w["vel"][:, 0] - w["vel"][:, -1]).abs().amax((1, 2)).min() > 1e-3  # they did collide
    gap = (w["pos"][:, :, 0] - w["pos"][:, :, 1]).norm(dim=-1) - w["radius"].sum(1, keepdim=True)
    assert float(gap.min()) > -1e-4, "discs overlap"


def test_bounce_keeps_speed_and_energy():
    w = pw.sample_world("bounce", 64, seed=2, cfg=CFG)
    g = w["gravity"][:, None]
    y_c = CFG.contact_y - w["radius"][:, :1]
    energy = 0.5 * (w["vel"][:, :, 0] ** 2).sum(-1) + g * (y_c - w["pos"][:, :, 0, 1])
    assert torch.allclose(energy, energy[:, :1].expand_as(energy), atol=1e-4)
    assert float((w["pos"][:, :, 0, 1] - y_c).max()) <= 1e-4  # never below the floor
    # the bounce in the generated frames: falling (vy > 0, y down) in the frame before it, rising after it, and
    # energy above says the speed at equal heights is the same both ways
    tb = w["event"]
    vy = w["vel"][:, :, 0, 1]
    t = torch.arange(CFG.frames)[None].float()
    before = vy[(t < tb[:, None]) & (t > tb[:, None] - 1)]
    after = vy[(t > tb[:, None]) & (t < tb[:, None] + 1)]
    assert before.numel() == after.numel() == 64
    assert (before > 0).all() and (after < 0).all()


@pytest.mark.parametrize("scenario", pw.SCENARIOS)
def test_splits_are_in_frame_and_outside_the_training_ranges(scenario):
    for split in pw.splits_for(scenario):
        w = pw.sample_world(scenario, 32, seed=0, split=split, cfg=CFG)
        r = w["radius"][:, None, :]
        x, y = w["pos"][..., 0], w["pos"][..., 1]
        ok = w["present"][:, None, :]
        assert bool(((x >= r - 0.5 - 1e-4) & (x <= CFG.size - 0.5 - r + 1e-4) & (y >= r - 0.5 - 1e-4)
                     & (y <= CFG.contact_y - r + 1e-4) | ~ok).all()), f"{scenario}/{split} leaves the frame"
        if split == "ood_radius":
            assert float(w["radius"][w["present"]].min()) > CFG.radius[1]
        if split == "ood_gravity":
            assert float(w["gravity"].min()) > CFG.gravity[1]
        if split == "ood_speed":
            assert float(w["realised_speed"].min()) >= CFG.speed_ood_min
    if scenario != "bounce":  # no gravity to vary
        with pytest.raises(ValueError, match="does not exist"):
            pw.make_clips(scenario, 1, seed=0, split="ood_gravity")


def test_eval_sets_are_fixed_by_seed():
    a = pw.make_clips("collision", 4, seed=7, cfg=CFG)
    b = pw.make_clips("collision", 4, seed=7, cfg=CFG)
    c = pw.make_clips("collision", 4, seed=7, split="ood_speed", cfg=CFG)
    assert torch.equal(a.video, b.video) and not torch.equal(a.video, c.video)
    assert a.labels[0].tolist() == [1, 0, 0, 0, 0, 1, 0, 0]  # Rigid Body + Collision


def test_flow_field_is_the_ball_displacement():
    clips = pw.make_clips("uniform", 2, seed=1, cfg=CFG)
    flow, mask = pw.flow_field(clips, CFG)
    v = clips.vel[:, 0, 0]  # uniform: displacement per frame = velocity
    inside = mask[:, 0].bool()
    for b in range(2):
        f = flow[b].permute(1, 2, 3, 0)[inside[b]]
        assert torch.allclose(f, v[b].expand_as(f), atol=1e-5)
    assert float(flow.permute(0, 2, 3, 4, 1)[~inside].abs().max()) == 0.0


# ---------------------------------------------------------------------------------------------- the experiment

def test_plain_adapter_matches_pila_parameters_and_starts_at_zero():
    from training import physworld_run as run

    cfg = run.load_config("smoke")
    plain, pila = run.build_plain(cfg), run.build_pila(cfg)
    assert abs(run.count_params(plain) - run.count_params(pila)) / run.count_params(pila) < 0.1
    # the compute-matched plain arm: FLOPs within 15 % of PILA's (which runs only top_k of its 8 experts)
    costs = run.model_costs({**cfg, "arms": ["plain", "plain_flops", "pila", "pila_dense"]})
    assert abs(costs["plain_flops"]["flops"] - costs["pila"]["flops"]) / costs["pila"]["flops"] < 0.15
    assert costs["pila_dense"]["flops"] > costs["pila"]["flops"]  # 8 experts cost more than 4
    x = torch.randn(2, 3, 8, 16, 16)
    dv = plain(x, torch.rand(2), torch.randn_like(x), torch.randn(2, 4, cfg["text_dim"]), None, torch.zeros(2, 8))
    assert dv.shape == x.shape and float(dv.detach().abs().max()) == 0.0


def test_training_resumes_to_the_uninterrupted_result(tmp_path):
    from training import physworld_run as run

    cfg = run.load_config("smoke")
    cfg["base_train"].update(steps=6)
    cfg["ckpt_every"] = 100
    threads = torch.get_num_threads()
    try:
        whole = run.Run(cfg, tmp_path / "whole", log=lambda m: None).base_model("weak")
        r = run.Run(cfg, tmp_path / "split", stop_after=4, log=lambda m: None)
        with pytest.raises(run.OutOfTime):
            r.base_model("weak")
        assert (tmp_path / "split/phases/weak/base/state.safetensors").is_file()
        resumed = run.Run(cfg, tmp_path / "split", log=lambda m: None).base_model("weak")
    finally:
        torch.set_num_threads(threads)
    for (k, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6), k
    # raising the step count later continues the finished phase: the same as the longer run from the start
    cfg["base_train"].update(steps=8)
    try:
        longer = run.Run(cfg, tmp_path / "longer", log=lambda m: None).base_model("weak")
        extended = run.Run(cfg, tmp_path / "whole", log=lambda m: None).base_model("weak")
    finally:
        torch.set_num_threads(threads)
    for (k, a), (_, b) in zip(longer.state_dict().items(), extended.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6), k
    assert not torch.allclose(whole.state_dict()["net.proj_out.weight"], extended.state_dict()["net.proj_out.weight"])


@pytest.mark.slow
def test_every_arm_trains_and_samples_under_bf16_autocast(tmp_path):
    """amp "force" turns on the run's bf16 autocast on the CPU (on CUDA `amp: true` does): the base, both plain
    adapters, PILA (all three stages) and the fine-tune run their forwards in bf16 and stay finite."""
    from training import physworld_run as run

    cfg = run.load_config("smoke")
    cfg.update(amp="force", seeds=1)
    cfg["base_train"].update(steps=2)
    cfg["adapter_train"].update(steps=6, batch=2)
    cfg["eval"].update(n=2, batch=2, steps=2)
    threads = torch.get_num_threads()
    seen = []

    def watch(module):
        first = next(m for m in module.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv3d)))
        first.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
        return module

    try:
        r = run.Run(cfg, tmp_path, log=lambda m: None)
        base = r.base_model("weak")
        assert r.amp
        clips, noise = r.eval_clips("bounce", "id")
        for arm in ("plain", "plain_flops", "pila", "finetune"):
            model, adapter = r.arm_model(base, "weak", arm)
            seen.clear()
            watch(adapter if adapter is not None else model)
            video = r.sample(model, adapter, clips, noise)
            assert seen and set(seen) == {torch.bfloat16}, (arm, set(seen))
            assert torch.isfinite(video).all(), arm
            logs = [json.loads(l) for p in (tmp_path / "phases/weak").glob(f"{arm}/s0/**/log.jsonl")
                    for l in p.read_text().splitlines()]
            assert logs and all(math.isfinite(l["loss"]) for l in logs), arm
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_smoke_configuration_end_to_end(tmp_path):
    from training import physworld_run as run

    threads = torch.get_num_threads()
    out = tmp_path / "smoke"
    try:
        # paused inside the plain adapter's training: a partial report with the base's sanity line
        assert run.main(["--config", "smoke", "--out", str(tmp_path), "--stop-after", "43"]) == 0
        partial = (out / "report.md").read_text()
        assert "Partial report" in partial and "Sanity:" in partial and "plain" in partial.split("Partial report")[1]
        assert (out / "phases/weak/plain/s0/state.safetensors").is_file()
        assert run.main(["--config", "smoke", "--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)
    report = (out / "report.md").read_text()
    assert "Partial report" not in report
    for needle in ("Velocity error", "ground_truth", "constant_velocity", "erased", "speckle", "plain_flops",
                   "`pila` minus each other arm", "The claim", "bounce | ood_gravity", "forward GFLOP per clip",
                   "FLOP estimate", "weak/pila train", "for all 2 seeds", "training pool of every arm"):
        assert needle in report, needle
    # every velocity error is printed with its detection rate, a trained arm's with its spread over seeds
    row = next(l for l in report.splitlines() if l.startswith("| bounce | id |"))
    assert row.count("%)") == len(row.split("|")) - 4 and "±" in row
    params = json.loads((out / "params.json").read_text())
    assert set(params) >= {"weak/base", "weak/plain", "weak/plain_flops", "weak/pila", "weak/finetune"}
    assert (out / "per_frame_weak_pila.png").stat().st_size > 0 and (out / "filmstrip_weak_bounce.png").is_file()
    assert len((out / "pairs.csv").read_text().splitlines()) > 1
    # a second call finds every phase finished and only rewrites the report; --pack keeps what a fresh machine
    # needs (the base's weights, the evaluations) and drops evaluated arms' weights, which are then not retrained
    before = (out / "eval" / "weak__pila__s1.safetensors").stat().st_mtime
    pack = tmp_path / "back" / "state"
    assert run.main(["--config", "smoke", "--out", str(tmp_path), "--pack", str(pack)]) == 0
    assert (out / "eval" / "weak__pila__s1.safetensors").stat().st_mtime == before
    assert (pack.parent / "report.md").is_file()
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    with tarfile.open(fileobj=io.BytesIO(b"".join(p.read_bytes() for p in sorted(pack.parent.glob("state.part*"))))) as t:
        names = t.getnames()
        t.extractall(fresh)
    assert "smoke/phases/weak/base/model.safetensors" in names and "smoke/eval/weak__pila__s1.safetensors" in names
    assert not any(n.startswith("smoke/phases/weak/pila/") for n in names)
    assert run.main(["--config", "smoke", "--out", str(fresh)]) == 0
    assert not (fresh / "smoke/phases/weak/pila").exists(), "an evaluated arm was retrained"
    assert "Sanity:" in report.split("## Base")[1].split("###")[0]
    assert (fresh / "smoke/report.md").read_text() == report
