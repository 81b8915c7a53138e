"""--wan reads the layouts users hold (tiny random Wan models written in each): ComfyUI's single file, the
original sharded release with its index and config, a diffusers folder; fp8 files are upcast; pickle is refused."""
from __future__ import annotations

import json

import pytest
import torch

import training  # noqa: F401  (torchvision shim)
from training.wan import FrozenWan, build_wan, diffusers_to_wan, load_wan, save_wan_file, tiny_wan_config


@pytest.fixture(scope="module")
def tiny():
    cfg = tiny_wan_config()
    model = build_wan(cfg, seed=5)
    g = torch.Generator().manual_seed(0)
    x, ctx = torch.randn(1, 16, 2, 8, 8, generator=g), torch.randn(1, 5, cfg["text_dim"], generator=g)
    return cfg, model, (x, torch.tensor([0.6]), ctx), FrozenWan(model)(x, torch.tensor([0.6]), ctx)


def _velocity(model, args):
    return FrozenWan(model)(*args)


def test_original_sharded_release_with_index_and_its_config(tmp_path, tiny):
    from safetensors.torch import save_file
    cfg, model, args, want = tiny
    sd = diffusers_to_wan({k: v.contiguous() for k, v in model.state_dict().items()})  # original names, no prefix
    keys = sorted(sd)
    shards = {"diffusion_pytorch_model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "diffusion_pytorch_model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    for name, ks in shards.items():
        save_file({k: sd[k] for k in ks}, str(tmp_path / name))
    (tmp_path / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: name for name, ks in shards.items() for k in ks}}))
    heads, hd = cfg["num_attention_heads"], cfg["attention_head_dim"]
    (tmp_path / "config.json").write_text(json.dumps({  # the original release's own config names
        "_class_name": "WanModel", "model_type": "t2v", "dim": heads * hd, "num_heads": heads, "ffn_dim": cfg["ffn_dim"],
        "freq_dim": cfg["freq_dim"], "num_layers": cfg["num_layers"], "in_dim": 16, "out_dim": 16,
        "text_dim": cfg["text_dim"], "eps": 1e-6}))
    loaded = load_wan(tmp_path, "1.3b", dtype=torch.float32)  # the folder's config wins over the 1.3B default
    assert torch.equal(_velocity(loaded, args), want)
    (tmp_path / "diffusion_pytorch_model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="lists shards that are not in"):
        load_wan(tmp_path, dtype=torch.float32)


def test_diffusers_pipeline_folder_and_its_transformer_folder(tmp_path, tiny):
    cfg, model, args, want = tiny
    model.save_pretrained(str(tmp_path / "Wan2.1-T2V-1.3B-Diffusers" / "transformer"), safe_serialization=True)
    (tmp_path / "Wan2.1-T2V-1.3B-Diffusers" / "model_index.json").write_text("{}")
    for p in (tmp_path / "Wan2.1-T2V-1.3B-Diffusers", tmp_path / "Wan2.1-T2V-1.3B-Diffusers" / "transformer"):
        assert torch.equal(_velocity(load_wan(p, "14b", dtype=torch.float32), args), want)  # its config.json wins


def test_comfyui_fp8_file_is_upcast_to_bf16(tmp_path, tiny, caplog):
    """Plain and 'scaled' fp8 (a scale_weight per matrix, as ComfyUI writes them): loaded upcast to bf16, the
    weights equal to the dequantised fp8 values, the velocity close to the bf16 model's."""
    from safetensors.torch import load_file, save_file
    cfg, model, args, want = tiny
    path = save_wan_file(model, tmp_path / "wan_bf16.safetensors")
    sd = load_file(str(path))
    scaled, plain, deq = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}, {}, {}
    for k, v in sd.items():
        if v.ndim == 2 and k.endswith(".weight"):
            s = v.abs().max() / 448.0
            q = (v / s).to(torch.float8_e4m3fn)
            scaled[k], scaled[k[: -len("weight")] + "scale_weight"] = q, s.reshape(1)
            plain[k] = v.to(torch.float8_e4m3fn)
            deq[k] = (q.float() * s).to(torch.bfloat16)
        else:
            scaled[k] = plain[k] = v
    save_file(scaled, str(tmp_path / "wan_fp8_scaled.safetensors"))
    save_file(plain, str(tmp_path / "wan_fp8.safetensors"))
    with caplog.at_level("WARNING"):
        m8 = load_wan(tmp_path / "wan_fp8_scaled.safetensors", cfg, dtype=torch.bfloat16)
    assert "fp8 weights" in caplog.text and "wan_fp8_scaled.safetensors" in caplog.text
    assert m8.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    q_key = "model.diffusion_model.blocks.0.self_attn.q.weight"
    assert torch.equal(m8.blocks[0].attn1.to_q.weight, deq[q_key])
    ref = load_wan(path, cfg, dtype=torch.bfloat16)
    for m in (m8, load_wan(tmp_path / "wan_fp8.safetensors", cfg, dtype=torch.bfloat16)):
        v8, v16 = _velocity(m, args), _velocity(ref, args)
        assert torch.isfinite(v8).all()
        assert float((v8 - v16).norm() / v16.norm()) < 0.15  # fp8 keeps ~2 significant bits of mantissa


def test_pickle_and_empty_folders_are_refused_with_the_way_on(tmp_path):
    (tmp_path / "Wan2.1_VAE.pth").write_bytes(b"not loaded")
    with pytest.raises(ValueError, match="pickle checkpoints are not loaded"):
        load_wan(tmp_path / "Wan2.1_VAE.pth")
    with pytest.raises(FileNotFoundError, match=r"only pickle files.*Wan2.1_VAE.pth"):
        load_wan(tmp_path)
    with pytest.raises(FileNotFoundError, match="original release folder"):
        load_wan(tmp_path / "nothing_here")


def test_encoders_from_a_diffusers_pipeline_folder_and_pickle_refused(tmp_path):
    """--vae / --t5 given the diffusers pipeline root: its vae/, text_encoder/ and tokenizer/spiece.model load
    through training.cache's loaders; the original release's .pth files are refused, naming the file."""
    sentencepiece = pytest.importorskip("sentencepiece")
    from transformers import UMT5Config, UMT5EncoderModel
    from training.cache import load_text_encoder, load_vae, tiny_vae
    from training.weights import resolve_encoders
    root = tmp_path / "Wan2.1-T2V-1.3B-Diffusers"
    vae = tiny_vae(seed=2)
    vae.save_pretrained(str(root / "vae"), safe_serialization=True)
    torch.manual_seed(0)
    t5 = UMT5EncoderModel(UMT5Config(vocab_size=64, d_model=32, d_kv=8, num_heads=4, num_layers=1, d_ff=64,
                                     feed_forward_proj="gated-gelu", relative_attention_num_buckets=8)).eval()
    t5.save_pretrained(str(root / "text_encoder"), safe_serialization=True)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(["a ball falls and bounces", "water boils in a pot", "ice melts in the sun"] * 20))
    (root / "tokenizer").mkdir()
    sentencepiece.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(root / "tokenizer" / "spiece"),
                                             vocab_size=30, model_type="unigram", minloglevel=2)
    v, t, tok = resolve_encoders(str(root), str(root), "")
    assert v == str(root / "vae") and t == str(root / "text_encoder") and tok == str(root / "tokenizer" / "spiece.model")
    loaded = load_vae(v)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), vae.state_dict().values()))
    enc = load_text_encoder(t, tokenizer=tok, dtype=torch.float32)
    assert enc("a ball falls").shape[-1] == 32
    from training.cache import CacheConfig, build_encoders  # `python -m training.cache --vae ROOT --t5 ROOT` too
    latent_enc, text_enc = build_encoders(CacheConfig(vae=str(root), t5=str(root), device="cpu"))
    assert torch.equal(text_enc("a ball falls"), enc("a ball falls"))
    release = tmp_path / "Wan2.1-T2V-1.3B"
    release.mkdir()
    (release / "Wan2.1_VAE.pth").write_bytes(b"x")
    (release / "models_t5_umt5-xxl-enc-bf16.pth").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"Wan2.1_VAE.pth: the Wan VAE as a pickle checkpoint.*wan_2.1_vae.safetensors"):
        resolve_encoders(str(release / "Wan2.1_VAE.pth"), str(release / "models_t5_umt5-xxl-enc-bf16.pth"))
    with pytest.raises(ValueError, match=r"\.pth: the (Wan VAE|UMT5 encoder) as a pickle"):
        resolve_encoders(str(release), str(release))
