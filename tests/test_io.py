"""Adapter files (docs/method.md §2): safetensors round trip and clear errors for bad files."""
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from pila import FORMAT_VERSION, PILAAdapter, load_adapter, read_adapter_info, save_adapter

TINY = dict(hidden=16, groups=4, text_dim=32, latent_channels=3)


@pytest.fixture
def adapter():
    torch.manual_seed(0)
    a = PILAAdapter(**TINY)
    with torch.no_grad():  # non-trivial values everywhere, incl. the zero-initialised last conv
        for p in a.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return a


def _resave(src, dst, *, meta_update=None, tensors_update=None, drop=()):
    with safe_open(str(src), framework="pt") as fh:
        meta = dict(fh.metadata())
        tensors = {k: fh.get_tensor(k) for k in fh.keys() if k not in drop}
    meta.update(meta_update or {})
    tensors.update(tensors_update or {})
    save_file(tensors, str(dst), metadata=meta)
    return dst


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_round_trip_bit_exact(adapter, tmp_path, dtype):
    adapter = adapter.to(dtype)
    path = save_adapter(tmp_path / "a.safetensors", adapter, extra_metadata={"stage": "C", "step": 123})
    b = load_adapter(path)
    sa, sb = adapter.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sb[k].dtype == dtype and torch.equal(sa[k], sb[k]), k
    assert b.config == adapter.config
    x = torch.randn(2, 3, 3, 4, 4)
    v = torch.randn_like(x)
    assert torch.equal(adapter(x, 0.3, v, labels=torch.eye(8)[:2]), b(x, 0.3, v, labels=torch.eye(8)[:2]))
    assert load_adapter(path, dtype=torch.float32).dtype == torch.float32


def test_read_adapter_info(adapter, tmp_path):
    path = save_adapter(tmp_path / "a.safetensors", adapter, extra_metadata={"stage": "C", "step": 123})
    info = read_adapter_info(path)
    assert info["config"]["hidden"] == 16 and info["contract"]["version"] == 1
    assert info["format_version"] == FORMAT_VERSION
    assert info["extras"] == {"stage": "C", "step": 123}
    assert info["params"] == sum(t.numel() for t in adapter.state_dict().values())


def _raises(path, *words):
    with pytest.raises(ValueError) as err:
        load_adapter(path)
    msg = str(err.value)
    assert str(path) in msg, msg
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"
    return msg


def test_not_safetensors(tmp_path):
    p = tmp_path / "weights.pt"
    p.write_bytes(b"\x80\x02}q\x00(X\x05\x00\x00\x00hello" * 10)  # looks like a pickle
    _raises(p, "not a safetensors file")
    q = tmp_path / "empty.safetensors"
    q.write_bytes(b"")
    _raises(q, "not a safetensors file")
    _raises(tmp_path / "missing.safetensors", "no such adapter file")


def test_truncated(adapter, tmp_path):
    path = save_adapter(tmp_path / "a.safetensors", adapter)
    data = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    _raises(cut, "truncated")
    head = tmp_path / "head.safetensors"
    head.write_bytes(data[:100])  # cut inside the JSON header
    _raises(head, "truncated")


def test_foreign_safetensors(tmp_path):
    p = tmp_path / "wan2.1_t2v_1.3B_fp16.safetensors"
    save_file({"blocks.0.self_attn.q.weight": torch.zeros(4, 4), "patch_embedding.weight": torch.zeros(2, 2)}, str(p))
    _raises(p, "not a PILA adapter", "blocks.0.self_attn.q.weight")
    with pytest.raises(ValueError, match="not a PILA adapter"):
        read_adapter_info(p)


def test_other_contract_version(adapter, tmp_path):
    src = save_adapter(tmp_path / "a.safetensors", adapter)
    with safe_open(str(src), framework="pt") as fh:
        contract = json.loads(fh.metadata()["bank_contract"])
    contract["version"] = 99
    bad = _resave(src, tmp_path / "v99.safetensors", meta_update={"bank_contract": json.dumps(contract)})
    _raises(bad, "bank contract", "99")
    contract["version"], contract["slots"] = 1, contract["slots"][::-1]
    bad = _resave(src, tmp_path / "order.safetensors", meta_update={"bank_contract": json.dumps(contract)})
    _raises(bad, "bank contract", "slots")


def test_other_format_version(adapter, tmp_path):
    src = save_adapter(tmp_path / "a.safetensors", adapter)
    bad = _resave(src, tmp_path / "f2.safetensors", meta_update={"format_version": "2"})
    _raises(bad, "format version", "'2'")


def test_tensor_mismatches(adapter, tmp_path):
    src = save_adapter(tmp_path / "a.safetensors", adapter)
    key = "decoder.out.weight"
    bad = _resave(src, tmp_path / "shape.safetensors", tensors_update={key: torch.zeros(5, 16, 1, 1, 1)})
    _raises(bad, "shape mismatches", key)
    bad = _resave(src, tmp_path / "missing.safetensors", drop=(key,))
    _raises(bad, "missing tensors", key)
    bad = _resave(src, tmp_path / "extra.safetensors", tensors_update={"lora.up": torch.zeros(1)})
    _raises(bad, "unexpected tensors", "lora.up")
    cfg = json.loads(adapter.config.to_json())
    cfg["hidden"] = 32
    bad = _resave(src, tmp_path / "cfg.safetensors", meta_update={"config": json.dumps(cfg)})
    _raises(bad, "shape mismatches")
    cfg["hidden"], cfg["wings"] = 16, 2
    bad = _resave(src, tmp_path / "cfg2.safetensors", meta_update={"config": json.dumps(cfg)})
    _raises(bad, "config", "wings")


def test_a_loaded_adapter_keeps_its_weights_when_the_file_changes(tmp_path):
    """In process: the loader reads the file into memory; overwriting or truncating it later changes nothing."""
    from pila import PILAAdapter, load_adapter, save_adapter

    def tiny_adapter(seed):
        torch.manual_seed(seed)
        a = PILAAdapter(hidden=16)
        with torch.no_grad():
            a.decoder.out.weight.normal_(0, 0.05)
        return a

    path = tmp_path / "a.safetensors"
    save_adapter(path, tiny_adapter(seed=0))
    adapter = load_adapter(path)
    before = {k: v.clone() for k, v in adapter.state_dict().items()}
    save_adapter(tmp_path / "b.safetensors", tiny_adapter(seed=1))
    with open(path, "r+b") as fh:  # in place, as `cp` does (a memory map would follow the new bytes)
        fh.write((tmp_path / "b.safetensors").read_bytes())
    after_overwrite = {k: v.clone() for k, v in adapter.state_dict().items()}
    with open(path, "r+b") as fh:
        fh.truncate(100)
    after = adapter.state_dict()
    assert all(torch.equal(before[k], after_overwrite[k]) and torch.equal(before[k], after[k]) for k in before)
