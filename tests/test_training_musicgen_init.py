import pytest
import torch
from transformers import MusicgenDecoderConfig, MusicgenForCausalLM

from tokmusic.cards import stage_config
from tokmusic.compatibility import PipelineShape
from tokmusic.errors import CheckpointError
from tokmusic.stage import Stage
from tokmusic.training.musicgen_init import init_from_musicgen

SHAPE = PipelineShape(visual_dim=6, control_dim=4, codebook_size=64, n_coarse=2, n_fine=2, frame_rate=50.0,
                      semantic_vocab=8, semantic_rate=25.0)
MODEL = {"d_model": 32, "n_heads": 2, "encoder_layers": 1, "decoder_layers": 2, "d_ff": 64, "dropout": 0.0}


@pytest.fixture(scope="module")
def musicgen(tmp_path_factory):
    torch.manual_seed(0)
    cfg = MusicgenDecoderConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                ffn_dim=64, num_codebooks=4, max_position_embeddings=64)
    model = MusicgenForCausalLM(cfg).eval()
    out = tmp_path_factory.mktemp("musicgen")
    model.save_pretrained(out, safe_serialization=True)
    return out, model.state_dict()


def test_copies_decoder_layers_embeddings_and_heads(musicgen):
    path, state = musicgen
    stage = Stage(stage_config({"kind": "fine", "model": MODEL}, SHAPE))
    report = init_from_musicgen(stage, path)
    assert "codebooks 2..3" in report
    ours = stage.state_dict()
    src = "model.decoder.layers.1"
    assert torch.equal(ours["decoder.layers.1.self_attn.q.weight"], state[f"{src}.self_attn.q_proj.weight"])
    assert torch.equal(ours["decoder.layers.1.cross_attn.kv.weight"],
                       torch.cat([state[f"{src}.encoder_attn.k_proj.weight"], state[f"{src}.encoder_attn.v_proj.weight"]]))
    assert torch.equal(ours["decoder.layers.1.ff.3.weight"], state[f"{src}.fc2.weight"])
    assert torch.equal(ours["decoder.layers.1.ff.3.bias"], torch.zeros(32))
    assert torch.equal(ours["decoder.layers.1.norm3.weight"], state[f"{src}.final_layer_norm.weight"])
    assert torch.equal(ours["decoder.norm.bias"], state["model.decoder.layer_norm.bias"])
    assert torch.equal(ours["target_emb.1.weight"], state["model.decoder.embed_tokens.3.weight"])  # fine: offset 2
    assert torch.equal(ours["head.weight"][64:], state["lm_heads.3.weight"])


def test_vocab_mismatch_keeps_embeddings_and_width_mismatch_fails(musicgen):
    path, _ = musicgen
    other = PipelineShape(**{**SHAPE.__dict__, "codebook_size": 32})
    stage = Stage(stage_config({"kind": "coarse", "model": MODEL}, other))
    before = stage.state_dict()["head.weight"].clone()
    assert "left as initialised" in init_from_musicgen(stage, path)
    assert torch.equal(stage.state_dict()["head.weight"], before)
    wide = Stage(stage_config({"kind": "coarse", "model": {**MODEL, "d_model": 64}}, SHAPE))
    with pytest.raises(CheckpointError, match="stage d_model=64 but MusicGen hidden_size=32"):
        init_from_musicgen(wide, path)
    with pytest.raises(CheckpointError, match="not MusicGen decoder weights"):
        torch.manual_seed(0)
        from tokmusic.fileio import save_tensors
        save_tensors(path.parent / "other.safetensors", {"x": torch.zeros(1)})
        init_from_musicgen(wide, path.parent / "other.safetensors")
