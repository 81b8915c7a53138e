"""A small analytic physics world and its motion metrics (the phyworld protocol of Kang et al. 2024).

Three scenarios, no physics engine (every position is a closed form):
- `uniform`: one ball in uniform motion;
- `bounce`: one ball under gravity with perfectly elastic bounces on the floor;
- `collision`: two balls in uniform motion that collide elastically once (equal masses, or masses ~ r^2).

Conventions: positions are (x, y) in pixels, pixel (row i, column j) has its centre at (x=j, y=i), y points down;
time steps are frames; velocities are px/frame, gravity px/frame^2. Videos are `[B, 3, T, H, W]` in [-1, 1]
(the diffusion models' range); the first `cond_frames` frames are the condition. The floor is drawn as the bottom
`floor_rows` rows in every scenario, so the scene is the same and only the motion differs.

Splits: `id` (training ranges) and out-of-distribution in `ood_speed`, `ood_radius`, `ood_gravity` (the last only
exists for `bounce`, the one scenario with gravity). Ranges are given for the reference 32x32 / 16-frame world and
scaled with the image size (lengths) and the frame count (time) for other sizes. Speed splits are defined by the
*realised* speed of a clip (`realised_speed`: the mean |p[t+1] - p[t]| over its frames and balls), not by the drawn
parameter: every clip outside `ood_speed` (the training data of every arm included) has a realised speed of at most
`speed_id_max`, every `ood_speed` clip at least `speed_ood_min`, so the two are disjoint by construction (a bounce's
per-frame speed passes through ~0 at its apex, so per-frame speeds cannot be disjoint; per clip they are).

Metrics: each ball's colour is unmixed from the frame (pixel = bg + sum_k a_k (colour_k - bg), solved exactly for
the two ball colours and the floor) and thresholded. A ball counts as *detected* only as a blob of plausible size:
between `size_range` (0.5x-2x) of the area a rendered ball of its radius covers at that threshold (pi (r + 0.2)^2 at
0.3), so an erased ball, a smear or speckle is not "found". Its centroid is taken over that blob (the largest
plausible 8-connected blob, scipy.ndimage.label) or over the whole frame (found when the whole frame's area is
plausible). Velocity error compares finite-difference velocities of the detected and the true positions over the
generated frames; a step whose ball is not detected at both ends is charged `miss_penalty` px/frame (default 0.52 x
the frame size: the mean distance between two random points of the frame, i.e. what guessing the position scores).
Every table also reports the ground-truth floor, two trivial baselines (`copy_last_frame`, `constant_velocity`) and
two failure baselines (`erased`: plain background; `speckle`: uniform noise), measured by the same detector.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from pila.taxonomy import multi_hot

SCENARIOS: tuple[str, ...] = ("uniform", "bounce", "collision")
SPLITS: tuple[str, ...] = ("id", "ood_speed", "ood_radius", "ood_gravity")
# scenario -> physical categories (docs/method.md §4 taxonomy)
SCENARIO_LABELS: dict[str, tuple[str, ...]] = {
    "uniform": ("Rigid Body",),
    "bounce": ("Rigid Body", "Collision"),
    "collision": ("Rigid Body", "Collision"),
}
def splits_for(scenario: str) -> tuple[str, ...]:
    """Splits that exist for a scenario (gravity only varies where there is gravity)."""
    return SPLITS if scenario == "bounce" else tuple(s for s in SPLITS if s != "ood_gravity")


@dataclass
class WorldConfig:
    size: int = 32  # H = W in pixels
    frames: int = 16  # T
    cond_frames: int = 3  # the first frames are given
    floor_rows: int = 2
    background: tuple[float, float, float] = (0.08, 0.08, 0.10)
    ball_colours: tuple[tuple[float, float, float], ...] = ((0.92, 0.18, 0.15), (0.15, 0.40, 0.95))
    floor_colour: tuple[float, float, float] = (0.45, 0.62, 0.30)
    mass_mode: str = "equal"  # "equal" | "area" (m ~ r^2) for collisions
    # ranges for the reference 32 px / 16-frame world: (low, high); ID ranges are the training ranges
    radius: tuple[float, float] = (2.5, 3.5)
    radius_ood: tuple[float, float] = (4.0, 4.75)
    speed: tuple[float, float] = (0.4, 1.0)  # uniform and collision speeds
    speed_ood: tuple[float, float] = (1.3, 1.6)
    impact_speed: tuple[float, float] = (0.9, 1.5)  # bounce: vertical speed at the floor (bounce height v^2 / 2g)
    impact_speed_ood: tuple[float, float] = (1.75, 2.0)
    bounce_vx: tuple[float, float] = (-0.5, 0.5)
    gravity: tuple[float, float] = (0.09, 0.15)
    gravity_ood: tuple[float, float] = (0.22, 0.30)
    # realised speed per clip (reference px/frame, scaled like speeds): at most speed_id_max outside ood_speed,
    # at least speed_ood_min inside it (the splits are disjoint by realised speed)
    speed_id_max: float = 1.2
    speed_ood_min: float = 1.3
    # detection: a blob of (0.5x .. 2x) a rendered ball's area; an undetected step costs miss_penalty px/frame
    size_range: tuple[float, float] = (0.5, 2.0)
    miss_penalty: float | None = None  # None: 0.5214 x size (mean distance of two random points in the frame)

    def __post_init__(self):
        assert self.size >= 12, f"size must be >= 12 px, got {self.size}"
        assert 2 <= self.cond_frames < self.frames - 2, "need >= 2 condition frames and >= 3 generated frames"
        assert self.mass_mode in ("equal", "area"), f"mass_mode is 'equal' or 'area', got {self.mass_mode!r}"

    @property
    def length_scale(self) -> float:
        return self.size / 32.0

    @property
    def time_scale(self) -> float:  # frames of the reference world per frame of this one
        return 16.0 / self.frames

    @property
    def penalty(self) -> float:
        return 0.5214 * self.size if self.miss_penalty is None else float(self.miss_penalty)

    @property
    def speed_bounds(self) -> tuple[float, float]:
        """(ID maximum, OOD minimum) realised speed in this world's px/frame."""
        k = self.length_scale * self.time_scale
        return self.speed_id_max * k, self.speed_ood_min * k

    @property
    def contact_y(self) -> float:
        """Upper edge of the floor (a ball of radius r touches it when y + r == contact_y)."""
        return self.size - self.floor_rows - 0.5

    @property
    def generated(self) -> slice:
        return slice(self.cond_frames, self.frames)


@dataclass
class Clips:
    """A batch of clips with their ground truth. K = 2 ball slots; `present[:, 1]` is False outside collisions."""
    video: Tensor  # [B, 3, T, H, W] in [-1, 1]
    pos: Tensor  # [B, T, K, 2] px, (x, y)
    vel: Tensor  # [B, T, K, 2] px/frame, analytic instantaneous velocity
    radius: Tensor  # [B, K] px
    mass: Tensor  # [B, K]
    present: Tensor  # [B, K] bool
    labels: Tensor  # [B, 8] multi-hot categories
    scenario: list[str]
    params: dict[str, Tensor] = field(default_factory=dict)  # per-clip speed, gravity, event time

    def __len__(self) -> int:
        return self.video.shape[0]

    @staticmethod
    def cat(parts: list["Clips"]) -> "Clips":
        return Clips(*(torch.cat([getattr(p, n) for p in parts]) for n in
                       ("video", "pos", "vel", "radius", "mass", "present", "labels")),
                     sum((p.scenario for p in parts), []),
                     {k: torch.cat([p.params[k] for p in parts]) for k in parts[0].params})


# --------------------------------------------------------------------------------------------------------------
# analytic trajectories (numpy, float64, one clip at a time; rejection sampling keeps every ball in the frame)

def _in_frame(pos: np.ndarray, r: float, cfg: WorldConfig) -> bool:
    """pos [T, 2]: the whole ball stays inside the image and above the floor."""
    lo, hi = r - 0.5, cfg.size - 0.5 - r
    return bool((pos[:, 0] >= lo).all() and (pos[:, 0] <= hi).all() and (pos[:, 1] >= lo).all()
                and (pos[:, 1] <= cfg.contact_y - r + 1e-9).all())


def _place(rng: np.random.Generator, paths: list[tuple[np.ndarray, float]], cfg: WorldConfig) -> np.ndarray | None:
    """A uniformly drawn offset that puts every (path [T, 2], radius) fully in the frame, or None if none exists."""
    lo = np.max([np.array([r - 0.5, r - 0.5]) - p.min(0) for p, r in paths], 0)
    hi = np.min([np.array([cfg.size - 0.5 - r, cfg.contact_y - r]) - p.max(0) for p, r in paths], 0)
    if (lo > hi).any():
        return None
    return rng.uniform(lo, hi)


def _ranges(cfg: WorldConfig, split: str) -> dict[str, tuple[float, float]]:
    L, S = cfg.length_scale, cfg.time_scale
    pick = lambda name, ood: getattr(cfg, name + "_ood") if split == ood else getattr(cfg, name)  # noqa: E731
    scale = lambda rng, k: (rng[0] * k, rng[1] * k)  # noqa: E731
    return {
        "radius": scale(pick("radius", "ood_radius"), L),
        "speed": scale(pick("speed", "ood_speed"), L * S),
        "impact_speed": scale(pick("impact_speed", "ood_speed"), L * S),
        "bounce_vx": scale(cfg.bounce_vx, L * S),
        "gravity": scale(pick("gravity", "ood_gravity"), L * S * S),
    }


def uniform_trajectory(rng: np.random.Generator, cfg: WorldConfig, split: str = "id") -> dict:
    R = _ranges(cfg, split)
    t = np.arange(cfg.frames, dtype=np.float64)
    for _ in range(10_000):
        r = rng.uniform(*R["radius"])
        speed = rng.uniform(*R["speed"])
        ang = rng.uniform(0, 2 * math.pi)
        v = speed * np.array([math.cos(ang), math.sin(ang)])
        path = t[:, None] * v[None]
        p0 = _place(rng, [(path, r)], cfg)
        if p0 is not None:
            pos = p0[None] + path
            return {"pos": pos[:, None], "vel": np.broadcast_to(v, (cfg.frames, 2))[:, None].copy(),
                    "radius": [r], "mass": [1.0], "speed": speed, "gravity": 0.0, "event": -1.0}
    raise RuntimeError(f"could not place a uniform trajectory for split {split!r}: ranges too large for the frame")


def bounce_trajectory(rng: np.random.Generator, cfg: WorldConfig, split: str = "id") -> dict:
    """y(t) = y_c - (w tau - g tau^2 / 2), tau = (t - t_b) mod (2 w / g): a bounce at t_b in the generated frames,
    the same impact speed w at every bounce (elastic), vx constant."""
    R = _ranges(cfg, split)
    t = np.arange(cfg.frames, dtype=np.float64)
    for _ in range(10_000):
        r = rng.uniform(*R["radius"])
        w = rng.uniform(*R["impact_speed"])
        g = rng.uniform(*R["gravity"])
        vx = rng.uniform(*R["bounce_vx"])
        tb = rng.uniform(cfg.cond_frames + 1, cfg.frames - 2)  # first bounce in the generated frames
        y_c = cfg.contact_y - r
        period = 2 * w / g
        tau = np.mod(t - tb, period)
        y = y_c - (w * tau - 0.5 * g * tau**2)
        vy = -(w - g * tau)
        x0 = rng.uniform(r - 0.5, cfg.size - 0.5 - r)
        x = x0 + vx * (t - tb)
        pos = np.stack([x, y], -1)
        if _in_frame(pos, r, cfg):
            vel = np.stack([np.full_like(t, vx), vy], -1)
            return {"pos": pos[:, None], "vel": vel[:, None], "radius": [r], "mass": [1.0],
                    "speed": w, "gravity": g, "event": tb}
    raise RuntimeError(f"could not place a bounce trajectory for split {split!r}: ranges too large for the frame")


def elastic_collision(v1: np.ndarray, v2: np.ndarray, n: np.ndarray, m1: float, m2: float):
    """Post-collision velocities of two discs touching along the unit normal n (from ball 1 to ball 2)."""
    w = float(np.dot(v1 - v2, n))
    return v1 - (2 * m2 / (m1 + m2)) * w * n, v2 + (2 * m1 / (m1 + m2)) * w * n


def collision_trajectory(rng: np.random.Generator, cfg: WorldConfig, split: str = "id") -> dict:
    """Contact at t_c with centres c - n r1 and c + n r2; straight lines before and after (they approach before t_c
    and separate after it, so the discs never overlap)."""
    R = _ranges(cfg, split)
    t = np.arange(cfg.frames, dtype=np.float64)[:, None]
    for _ in range(20_000):
        r1, r2 = rng.uniform(*R["radius"], size=2)
        m1, m2 = (1.0, 1.0) if cfg.mass_mode == "equal" else (r1**2, r2**2)
        s1, s2 = rng.uniform(*R["speed"], size=2)
        ang = rng.uniform(0, 2 * math.pi)
        n = np.array([math.cos(ang), math.sin(ang)])
        a1, a2 = rng.uniform(-0.9, 0.9, size=2)  # approach angles off the normal (radians)
        rot = lambda a: np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])  # noqa: E731
        v1, v2 = s1 * rot(a1) @ n, -s2 * rot(a2) @ n
        if np.dot(v1 - v2, n) <= 0.05:
            continue
        tc = rng.uniform(cfg.cond_frames + 1.5, cfg.frames - 3)
        u1, u2 = elastic_collision(v1, v2, n, m1, m2)
        before = t < tc
        pos1 = -n * r1 + (t - tc) * np.where(before, v1, u1)
        pos2 = n * r2 + (t - tc) * np.where(before, v2, u2)
        c = _place(rng, [(pos1, r1), (pos2, r2)], cfg)  # the contact point
        if c is not None:
            pos1, pos2 = pos1 + c, pos2 + c
            vel = np.stack([np.where(before, v1, u1), np.where(before, v2, u2)], 1)
            return {"pos": np.stack([pos1, pos2], 1), "vel": vel, "radius": [r1, r2], "mass": [m1, m2],
                    "speed": 0.5 * (s1 + s2), "gravity": 0.0, "event": tc}
    raise RuntimeError(f"could not place a collision for split {split!r}: ranges too large for the frame")


TRAJECTORIES = {"uniform": uniform_trajectory, "bounce": bounce_trajectory, "collision": collision_trajectory}


# --------------------------------------------------------------------------------------------------------------
# rendering and colour unmixing

def render(pos: Tensor, radius: Tensor, present: Tensor, cfg: WorldConfig) -> Tensor:
    """pos [B, T, K, 2], radius [B, K], present [B, K] -> video [B, 3, T, H, W] in [-1, 1].
    Anti-aliased discs: coverage clamp(r + 0.5 - distance, 0, 1) (radially symmetric, so the weighted centroid of
    a fully visible disc is its centre up to the pixel grid)."""
    B, T, K, _ = pos.shape
    assert radius.shape == (B, K) and present.shape == (B, K), "radius / present must be [B, K]"
    S, dev = cfg.size, pos.device
    coords = torch.arange(S, dtype=torch.float32, device=dev)
    dxs = coords.view(1, 1, 1, 1, S) - pos[..., 0].float().permute(0, 2, 1)[..., None, None]  # [B, K, T, 1, W]
    dys = coords.view(1, 1, 1, S, 1) - pos[..., 1].float().permute(0, 2, 1)[..., None, None]  # [B, K, T, H, 1]
    dist = torch.sqrt(dxs**2 + dys**2)
    alpha = (radius.float()[:, :, None, None, None] + 0.5 - dist).clamp(0, 1) * present.float()[:, :, None, None, None]
    bg = torch.tensor(cfg.background, device=dev).view(1, 3, 1, 1, 1)
    img = bg.expand(B, 3, T, S, S).clone()
    for k in range(K):
        col = torch.tensor(cfg.ball_colours[k], device=dev).view(1, 3, 1, 1, 1)
        img = img + alpha[:, k:k + 1] * (col - bg)
    img = img.clamp(0, 1)
    img[..., S - cfg.floor_rows:, :] = torch.tensor(cfg.floor_colour, device=dev).view(1, 3, 1, 1, 1)
    return img * 2 - 1


def unmix(video: Tensor, cfg: WorldConfig) -> Tensor:
    """video [B, 3, T, H, W] in [-1, 1] -> per-ball coverage [B, K, T, H, W], solved exactly (least squares) on the
    basis {ball colours, floor colour} - background; floor rows are zeroed."""
    assert video.ndim == 5 and video.shape[1] == 3, f"video must be [B, 3, T, H, W], got {tuple(video.shape)}"
    img = (video.float() + 1) / 2
    bg = torch.tensor(cfg.background, device=video.device)
    basis = torch.stack([torch.tensor(c, device=video.device) - bg for c in (*cfg.ball_colours, cfg.floor_colour)], 1)
    pinv = torch.linalg.pinv(basis)  # [K + 1, 3]
    a = torch.einsum("kc,bcthw->bkthw", pinv, img - bg.view(1, 3, 1, 1, 1))[:, :len(cfg.ball_colours)]
    a = a.clone()
    a[..., cfg.size - cfg.floor_rows:, :] = 0
    return a.clamp(0, 1)


# --------------------------------------------------------------------------------------------------------------
# data sets

def _seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little")


def realised_speed(pos: Tensor | np.ndarray, present: Tensor | np.ndarray | None = None) -> Tensor:
    """pos [B, T, K, 2] (present [B, K]) -> [B]: mean per-frame speed |p[t+1] - p[t]| over frames and present balls."""
    pos = torch.as_tensor(pos, dtype=torch.float64)
    pres = torch.ones(pos.shape[0], pos.shape[2]) if present is None else torch.as_tensor(present)
    d = (pos[:, 1:] - pos[:, :-1]).norm(dim=-1)  # [B, T-1, K]
    w = pres.double()[:, None, :]
    return ((d * w).sum((1, 2)) / (w.sum((1, 2)) * d.shape[1])).float()


def _speed_ok(tr: dict, split: str, cfg: WorldConfig) -> bool:
    lo_id, lo_ood = cfg.speed_bounds
    v = float(realised_speed(tr["pos"][None])[0])
    return v >= lo_ood if split == "ood_speed" else v <= lo_id


def sample_world(scenario: str, n: int, *, seed: int, split: str = "id", cfg: WorldConfig | None = None) -> dict:
    """The ground truth of `n` clips of one scenario and split, fixed by (seed, scenario, split), without video:
    {"pos", "vel", "radius", "mass", "present", "speed", "gravity", "event", "realised_speed"} as float / bool
    tensors. Clips whose realised speed falls on the wrong side of the split's bound are redrawn."""
    cfg = cfg or WorldConfig()
    if scenario not in TRAJECTORIES:
        raise ValueError(f"unknown scenario {scenario!r}; valid: {SCENARIOS}")
    if split not in splits_for(scenario):
        raise ValueError(f"split {split!r} does not exist for {scenario!r}; valid: {splits_for(scenario)}")
    rng = np.random.default_rng(_seed(seed, scenario, split))
    K = len(cfg.ball_colours)
    pos = np.zeros((n, cfg.frames, K, 2))
    vel = np.zeros((n, cfg.frames, K, 2))
    radius, mass, present = np.ones((n, K)), np.ones((n, K)), np.zeros((n, K), dtype=bool)
    extra = {"speed": np.zeros(n), "gravity": np.zeros(n), "event": np.zeros(n), "realised_speed": np.zeros(n)}
    for i in range(n):
        for _ in range(1000):
            tr = TRAJECTORIES[scenario](rng, cfg, split)
            if _speed_ok(tr, split, cfg):
                break
        else:
            raise RuntimeError(f"{scenario}/{split}: no clip with a realised speed on the split's side of "
                               f"{cfg.speed_bounds}; widen the ranges or move speed_id_max / speed_ood_min")
        tr["realised_speed"] = float(realised_speed(tr["pos"][None])[0])
        nb = len(tr["radius"])
        pos[i, :, :nb], vel[i, :, :nb] = tr["pos"], tr["vel"]
        radius[i, :nb], mass[i, :nb], present[i, :nb] = tr["radius"], tr["mass"], True
        for k in extra:
            extra[k][i] = tr[k]
    out = {"pos": pos, "vel": vel, "radius": radius, "mass": mass, **extra}
    out = {k: torch.from_numpy(v).float() for k, v in out.items()}
    out["present"] = torch.from_numpy(present)
    return out


def clips_from_world(world: dict, scenario: str | list[str], cfg: WorldConfig) -> Clips:
    """Render ground truth (as from `sample_world`, on any device) into a `Clips` batch."""
    n = world["pos"].shape[0]
    names = [scenario] * n if isinstance(scenario, str) else list(scenario)
    labels = torch.stack([multi_hot(SCENARIO_LABELS[s]) for s in names]).to(world["pos"].device)
    return Clips(render(world["pos"], world["radius"], world["present"], cfg), world["pos"], world["vel"],
                 world["radius"], world["mass"], world["present"], labels, names,
                 {k: world[k] for k in ("speed", "gravity", "event", "realised_speed") if k in world})


def make_clips(scenario: str, n: int, *, seed: int, split: str = "id", cfg: WorldConfig | None = None) -> Clips:
    """`n` rendered clips of one scenario and split, fixed by (seed, scenario, split)."""
    cfg = cfg or WorldConfig()
    return clips_from_world(sample_world(scenario, n, seed=seed, split=split, cfg=cfg), scenario, cfg)


def flow_field(clips: Clips, cfg: WorldConfig, *, threshold: float = 0.5) -> tuple[Tensor, Tensor]:
    """Per-pixel forward flow (px/frame) from the analytic trajectory: inside ball k's disc at frame t the flow is
    pos[t+1] - pos[t] (the last frame repeats the previous one), 0 on the background. Returns (flow [B, 2, T, H, W],
    ball mask [B, 1, T, H, W]); a Stage A target for u in this world's "latent" (pixel) grid."""
    B, T = clips.pos.shape[:2]
    disp = torch.cat([clips.pos[:, 1:] - clips.pos[:, :-1], clips.pos[:, -1:] - clips.pos[:, -2:-1]], 1)  # [B,T,K,2]
    alpha = unmix(render(clips.pos, clips.radius, clips.present, cfg), cfg)  # [B, K, T, H, W]
    owner = (alpha > threshold).float()
    flow = torch.einsum("bkthw,btkc->bcthw", owner, disp)
    return flow, owner.amax(1, keepdim=True)


# --------------------------------------------------------------------------------------------------------------
# detection and metrics

def ball_area(radius: Tensor, threshold: float = 0.3) -> Tensor:
    """Pixels a rendered ball of radius r covers above `threshold`: coverage r + 0.5 - d > threshold, so a disc of
    radius r + 0.5 - threshold (measured within 0.55x-1.5x on the 16 px world's pixel grid, 0.83x-1.15x at 32 px)."""
    return math.pi * (radius.float() + 0.5 - threshold).clamp_min(0.5) ** 2


def detect(video: Tensor, cfg: WorldConfig, radius: Tensor, *, mode: str = "blob", threshold: float = 0.3
           ) -> tuple[Tensor, Tensor]:
    """Ball centroids from colour: (pos [B, T, K, 2], found [B, T, K] bool). A ball is found only as pixels over
    the threshold whose area is plausible, within `cfg.size_range` x `ball_area(radius [B, K])`. mode 'blob': the
    largest plausible 8-connected blob (robust to stray pixels, blind to an erased ball or speckle); 'frame': every
    pixel over the threshold, found when their total area is plausible."""
    from scipy import ndimage

    assert mode in ("frame", "blob"), f"mode is 'frame' or 'blob', got {mode!r}"
    alpha = unmix(video.detach().float().cpu(), cfg)  # [B, K, T, H, W]
    mask = (alpha > threshold).numpy()
    B, K, T, H, W = mask.shape
    assert radius.shape == (B, K), f"radius must be [B, K] = {(B, K)}, got {tuple(radius.shape)}"
    area = ball_area(radius.cpu(), threshold)[:, :, None].expand(B, K, T).reshape(-1).numpy()  # per plane
    lo, hi = area * cfg.size_range[0], area * cfg.size_range[1]
    planes = mask.reshape(-1, H, W)
    if mode == "blob":  # label all frames at once; the structure connects pixels within a frame only
        structure = np.zeros((3, 3, 3), dtype=bool)
        structure[1] = True
        lab, num = ndimage.label(planes, structure=structure)
        best = np.zeros(planes.shape[0], dtype=np.int64)  # label of the largest plausible blob per frame (0: none)
        if num > 0:
            sizes = np.bincount(lab.ravel(), minlength=num + 1)
            plane_of = np.zeros(num + 1, dtype=np.int64)
            plane_of[lab.ravel()] = np.repeat(np.arange(planes.shape[0]), H * W)
            ids = np.arange(1, num + 1)
            ids = ids[(sizes[ids] >= lo[plane_of[ids]]) & (sizes[ids] <= hi[plane_of[ids]])]
            order = np.lexsort((sizes[ids], plane_of[ids]))  # by plane, then size: the last per plane is largest
            best[plane_of[ids][order]] = ids[order]
        planes = (lab == best[:, None, None]) & (best[:, None, None] > 0)
        found = best > 0
    else:
        n = planes.sum((-1, -2))
        found = (n >= lo) & (n <= hi)
    found = torch.from_numpy(found.reshape(B, K, T))
    # weigh the anti-aliased rim too: the kept pixels grown by one pixel, weighted by their coverage
    grown = ndimage.binary_dilation(planes, structure=np.ones((1, 3, 3), dtype=bool))
    w = alpha * torch.from_numpy(grown.reshape(B, K, T, H, W))
    S = cfg.size
    coords = torch.arange(S, dtype=torch.float32)
    mass = w.sum((-1, -2))
    cx = (w * coords.view(1, 1, 1, 1, S)).sum((-1, -2)) / mass.clamp_min(1e-8)
    cy = (w * coords.view(1, 1, 1, S, 1)).sum((-1, -2)) / mass.clamp_min(1e-8)
    pos = torch.stack([cx, cy], -1).permute(0, 2, 1, 3)  # [B, T, K, 2]
    return pos, found.permute(0, 2, 1)


def _hold_missing(pos: Tensor, found: Tensor, fallback: Tensor) -> Tensor:
    """Replace undetected positions by the last detected one (frame 0 falls back to `fallback` [B, K, 2])."""
    out = pos.clone()
    last = fallback.clone()
    for t in range(pos.shape[1]):
        out[:, t] = torch.where(found[:, t, :, None], pos[:, t], last)
        last = out[:, t]
    return out


def motion_metrics(video: Tensor, clips: Clips, cfg: WorldConfig, *, mode: str = "blob",
                   threshold: float = 0.3) -> dict[str, Tensor]:
    """Per-clip metrics over the generated frames (means over the balls present):
    - `vel_err` [B]: mean over generated steps of |v_det - v_true| px/frame, v = finite difference of positions
      (frame t minus t-1, the first generated frame uses the last condition frame); a step whose ball is not
      detected at both ends costs `cfg.penalty` instead (losing the ball is worse than any motion it could have);
    - `vel_err_found` [B]: the same over the steps detected at both ends only (NaN when there is none);
    - `pos_err` [B, T_gen]: per-frame |p_det - p_true| px, an undetected ball holding its last detected position;
    - `det_rate` [B]: share of (generated frame, ball) pairs where a plausible ball was found."""
    pos, found = detect(video, cfg, clips.radius, mode=mode, threshold=threshold)
    g, c = cfg.generated, cfg.cond_frames
    pres = clips.present.float()[:, None, :]  # [B, 1, K]
    n_balls = clips.present.float().sum(1)
    both = (found[:, c:] & found[:, c - 1:-1]).float()  # [B, T_gen, K]: detected at both ends of the step
    step_err = (pos[:, c - 1:].diff(dim=1) - clips.pos[:, c - 1:].diff(dim=1)).norm(dim=-1)
    charged = both * step_err + (1 - both) * cfg.penalty
    verr = (charged * pres).sum(-1) / n_balls[:, None]  # [B, T_gen]
    n_found = (both * pres).sum((1, 2))
    verr_found = (both * step_err * pres).sum((1, 2)) / n_found.clamp_min(1)
    verr_found = torch.where(n_found > 0, verr_found, torch.full_like(verr_found, float("nan")))
    held = _hold_missing(pos, found, clips.pos[:, 0])
    perr = ((held[:, g] - clips.pos[:, g]).norm(dim=-1) * pres).sum(-1) / n_balls[:, None]
    det = (found[:, g].float() * pres).sum((1, 2)) / (n_balls * (cfg.frames - c))
    return {"vel_err": verr.mean(1), "vel_err_frames": verr, "vel_err_found": verr_found, "pos_err": perr,
            "det_rate": det}


# --------------------------------------------------------------------------------------------------------------
# trivial baselines (videos, measured by the same pipeline)

def copy_last_frame(clips: Clips, cfg: WorldConfig) -> Tensor:
    v = clips.video.clone()
    v[:, :, cfg.cond_frames:] = v[:, :, cfg.cond_frames - 1:cfg.cond_frames]
    return v


def constant_velocity(clips: Clips, cfg: WorldConfig) -> Tensor:
    """Extrapolate the last condition step (p[c-1] - p[c-2]) and render it with the true radii."""
    c = cfg.cond_frames
    v = clips.pos[:, c - 1] - clips.pos[:, c - 2]
    steps = torch.arange(cfg.frames, dtype=torch.float32).view(1, -1, 1, 1) - (c - 1)
    pos = torch.where(steps <= 0, clips.pos, clips.pos[:, c - 1:c] + steps * v[:, None])
    return render(pos, clips.radius, clips.present, cfg)


def erased(clips: Clips, cfg: WorldConfig) -> Tensor:
    """A failure baseline: every generated frame is the empty scene (background and floor)."""
    v = clips.video.clone()
    empty = render(clips.pos, clips.radius, torch.zeros_like(clips.present), cfg)
    v[:, :, cfg.cond_frames:] = empty[:, :, cfg.cond_frames:]
    return v


def speckle(clips: Clips, cfg: WorldConfig, *, seed: int = 0) -> Tensor:
    """A failure baseline: every generated pixel uniform noise in [-1, 1] (fixed by `seed`)."""
    v = clips.video.clone()
    g = torch.Generator().manual_seed(seed)
    gen = v[:, :, cfg.cond_frames:]
    v[:, :, cfg.cond_frames:] = (torch.rand(gen.shape, generator=g) * 2 - 1).to(v.device)
    return v


# the floor, the trivial baselines and the failure baselines: every table reports them beside the arms
BASELINES = {"ground_truth": lambda clips, cfg: clips.video, "copy_last_frame": copy_last_frame,
             "constant_velocity": constant_velocity, "erased": erased, "speckle": speckle}


# --------------------------------------------------------------------------------------------------------------
# statistics

def paired_bootstrap(a: Tensor | np.ndarray, b: Tensor | np.ndarray, *, n_boot: int = 2000, seed: int = 0,
                     level: float = 0.95) -> dict[str, float]:
    """Paired bootstrap of mean(a - b) over clips (a, b: per-clip errors of two arms on the same clips and noise).
    Returns the mean difference, its percentile CI, and the share of clips where a is lower (improved)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape and a.ndim == 1, f"paired samples must be two equal 1-D arrays, got {a.shape}, {b.shape}"
    ok = np.isfinite(a) & np.isfinite(b)
    d = a[ok] - b[ok]
    if d.size == 0:
        return {"diff": float("nan"), "lo": float("nan"), "hi": float("nan"), "improved": float("nan"), "n": 0}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(n_boot, d.size))
    means = d[idx].mean(1)
    q = (1 - level) / 2
    return {"diff": float(d.mean()), "lo": float(np.quantile(means, q)), "hi": float(np.quantile(means, 1 - q)),
            "improved": float((d < 0).mean()), "n": int(d.size)}


def text_embeddings(text_dim: int, *, seed: int = 0, tokens: int = 4) -> dict[str, Tensor]:
    """A fixed random 'text encoder': scenario -> text states [tokens, text_dim] (unit rows), the same for every
    arm and run with the same seed."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for s in SCENARIOS:
        e = torch.randn(tokens, text_dim, generator=g)
        out[s] = e / e.norm(dim=-1, keepdim=True)
    return out
