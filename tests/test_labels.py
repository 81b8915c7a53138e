"""Physics label parser (docs/method.md §9): dev-file figures, own held-out set, indirect / negated / figurative /
typo examples, determinism, the CLI, and the optional LLM parser (fallback on garbage, happy path)."""
import json
import logging
import re
from pathlib import Path

import pytest
import torch

from pila.labels import ParseResult, get_parser, parse
from pila.labels.__main__ import main as cli
from pila.labels.evaluate import baseline_most_frequent_set, load_jsonl, score
from pila.taxonomy import CATEGORIES

HERE = Path(__file__).resolve().parent
HELDOUT = HERE / "data" / "labels_heldout.jsonl"
HELDOUT2 = HERE / "data" / "labels_heldout2.jsonl"
HELDOUT3 = HERE / "data" / "labels_heldout3.jsonl"
HELDOUT4 = HERE / "data" / "labels_heldout4.jsonl"
EVAL1 = HERE / "data" / "labels_eval_set1.jsonl"   # written independently, scored once before use: docs/labels_eval.md
EVAL2 = HERE / "data" / "labels_eval_set2.jsonl"
EVAL3 = HERE / "data" / "labels_eval_set3.jsonl"   # two more authors, also scored once before use
EVAL4 = HERE / "data" / "labels_eval_set4.jsonl"
EVAL5 = HERE / "data" / "labels_eval_set5.jsonl"   # a fourth author, scored once (0.806 / 0.591), never trained on
R, E, F, G, P, X, T, O = CATEGORIES

# Measured with the default parser (rules' evidence weighed by the trained linear model, see docs/labels_eval.md).
# The dev file, heldout 1-3 and the four independent sets are TRAINING data of the shipped model, so their floors are
# regression guards, not generalisation figures (dev 0.996 / 0.988; heldout 1.000 / 1.000, heldout2 1.000 / 1.000,
# heldout3 0.984 / 0.950; set1 1.000 / 1.000, set2 1.000 / 1.000, set3 0.994 / 0.986, set4 0.995 / 0.988).
# heldout4 (30 prompts) was never trained on: 0.853 / 0.633. The honest generalisation estimates are the first-time scores and the leave-one-source-out figures
# in docs/labels_eval.md. Keyword-free baseline (always the most frequent label set): dev 0.424 / 0.335.
DEV_FLOOR = {"micro_f1": 0.94, "exact_match": 0.88}
TRAINED_FLOOR = {"micro_f1": 0.90, "exact_match": 0.78}
UNTUNED_FLOOR = {"micro_f1": 0.78, "exact_match": 0.60}
SET5_FLOOR = {"micro_f1": 0.78, "exact_match": 0.55}  # a regression guard a little under its first-time score


def _run_cli(capsys, *argv) -> str:
    assert cli(list(argv)) == 0
    return capsys.readouterr().out


def _figures(out: str) -> dict:
    lines = out.strip().splitlines()
    assert re.fullmatch(r"micro_f1: \d\.\d{3}", lines[-2]), lines[-2]
    assert re.fullmatch(r"exact_match: \d\.\d{3}", lines[-1]), lines[-1]
    assert any(line.startswith("mean_ms_per_prompt:") for line in lines[:-2])
    for c in CATEGORIES:
        assert any(line.startswith(c) for line in lines), f"no table row for {c}"
    ms = next(float(line.split()[1]) for line in lines if line.startswith("mean_ms_per_prompt:"))
    return {"micro_f1": float(lines[-2].split()[1]), "exact_match": float(lines[-1].split()[1]), "ms": ms}


def test_dev_file_figures_beat_keyword_free_baseline(data_dir, capsys):
    # data/physics_labels_dev.jsonl: labels written for this project over VBench-2.0 and VideoPhy prompts
    dev = data_dir / "physics_labels_dev.jsonl"
    if not dev.is_file():
        pytest.skip(f"{dev} not found")
    fig = _figures(_run_cli(capsys, "evaluate", str(dev)))
    gold = [r["labels"] for r in load_jsonl(dev)]
    base = score(gold, [baseline_most_frequent_set(gold)] * len(gold))
    assert base["micro_f1"] < 0.5 and base["exact_match"] < 0.4, base   # the floor below is out of its reach
    assert fig["micro_f1"] >= DEV_FLOOR["micro_f1"], fig
    assert fig["exact_match"] >= DEV_FLOOR["exact_match"], fig


@pytest.mark.parametrize("path, floor", [(HELDOUT, TRAINED_FLOOR), (HELDOUT2, TRAINED_FLOOR), (HELDOUT3, TRAINED_FLOOR),
                                         (EVAL1, TRAINED_FLOOR), (EVAL2, TRAINED_FLOOR), (EVAL3, TRAINED_FLOOR),
                                         (EVAL4, TRAINED_FLOOR), (HELDOUT4, UNTUNED_FLOOR), (EVAL5, SET5_FLOOR)],
                         ids=["heldout", "heldout2", "heldout3", "eval_set1", "eval_set2", "eval_set3", "eval_set4",
                              "heldout4", "eval_set5"])
def test_labelled_sets(capsys, path, floor):
    """Differently phrased prompts (casual, typos, indirect, negated, figurative, many styles), labelled by the
    conventions of docs/labels.md; under 10 ms per prompt."""
    rows = load_jsonl(path)
    assert len(rows) >= 30
    fig = _figures(_run_cli(capsys, "evaluate", str(path)))
    assert fig["micro_f1"] >= floor["micro_f1"], fig
    assert fig["exact_match"] >= floor["exact_match"], fig
    assert fig["ms"] < 10.0, fig


@pytest.mark.parametrize("prompt, must, must_not", [
    # indirect descriptions: no category keyword in the prompt
    ("the kettle starts to whistle and a white plume rises", {G, P, T}, {R, X}),
    ("butter sizzling in a hot frying pan", {P, T}, {R, E}),
    ("a cold glass of lemonade sweating on a humid day", {P, T}, set()),
    ("frozen peas thawing on the counter", {P, T}, {F}),
    ("the iron bar glows red hot in the forge", {T, O}, set()),
    # negations
    ("an ice cube sits on a plate without melting", set(), {P, T, F}),
    ("the wine glass tips over and hits the floor but doesn't break", {R, X}, set()),
    ("an empty swimming pool with no water in it", set(), {F}),
    ("the ball didn't bounce, it just rolled away", {R}, {X}),
    ("no smoke, no flames, just a cold fireplace", set(), {P, T, G}),
    # figurative uses
    ("a melting pot of cultures in a busy city", set(), set(CATEGORIES)),
    ("she gave him a cold stare across the room", set(), set(CATEGORIES)),
    ("two senators in a heated debate on live tv", set(), set(CATEGORIES)),
    ("breaking news: the stock market crashed today", set(), set(CATEGORIES)),
    ("a flood of emails hit my inbox monday morning", set(), set(CATEGORIES)),
    ("my heart melted when i saw the puppy", set(), set(CATEGORIES)),
    ("our budget is bleeding money and the staff are burning out", set(), set(CATEGORIES)),
    pytest.param("he froze mid-sentence when the boss walked in", set(), set(CATEGORIES),
                 marks=pytest.mark.xfail(strict=True, reason="known miss: a person 'freezing' still reads as freezing")),
    # static scenes: physics objects, no process (none of these prompts is in the training data)
    ("studio photo of a ceramic teapot on a linen cloth, soft light", set(), set(CATEGORIES)),
    ("a jar of olive oil on a rustic shelf, still life", set(), set(CATEGORIES)),
    ("an unlit fireplace with stacked firewood in a quiet lodge", set(), set(CATEGORIES)),
    # mechanisms described by their effect
    ("by evening the puddles in the courtyard had dried up in the heat", {P}, {R, X}),
    ("the two linemen slam into each other at the snap", {X}, {P, T, F}),
    # casual phrasing and typos
    ("lol my phone slid off the desk and smacked the tiles", {R, X}, {F}),
    ("choclate bar melting in the hot sun", {P, T}, set()),
    ("kettel boiling over on the stove", {F, P, T}, set()),
    ("syrup ooozing over a stack of pancakes", {F}, set()),
])
def test_examples(prompt, must, must_not):
    r = parse(prompt)
    assert must <= set(r.labels), (prompt, r.labels, r.description)
    assert not (must_not & set(r.labels)), (prompt, r.labels, r.description)


@pytest.mark.parametrize("prompt, lang", [
    ("Ein Glas Wasser fällt vom Tisch und zerbricht auf dem Boden", "de"),
    ("Le beurre fond lentement dans une poêle chaude", "fr"),
    ("El agua hierve en la olla y sale mucho vapor", "es"),
    ("水が沸騰して湯気が出る", "ja"),
])
def test_non_english_prompt_gets_a_clear_warning(prompt, lang, capsys):
    r = parse(prompt)
    assert r.labels == [] and r.extras["language"] == lang
    assert "English" in r.extras["warning"] and "English" in r.description
    assert all(v == 0.0 for v in r.confidences.values())
    assert cli(["parse", prompt]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning:") and "English only" in err


def test_english_in_every_style_is_not_flagged():
    """Tag lists, slang, typos and every labelled prompt here are English (no false alarm of the language check)."""
    from pila.labels.language import detect
    prompts = ["basketball, dunk, rim, slow mo, 4k", "bro the skateboard yeeted itself lmao", "kettel boilin over",
               "lava lamp, product shot", "sushi, bokeh", "tsunami", "piñata smashed at a fiesta"]
    for path in (HELDOUT, HELDOUT2, HELDOUT3, HELDOUT4, EVAL1, EVAL2):
        prompts += [r["prompt"] for r in load_jsonl(path)]
    flagged = [p for p in prompts if detect(p)[0] != "en"]
    assert not flagged, flagged


def test_shipped_model_and_training_data():
    """model.json covers the 8 categories in order, its thresholds never get easier for a later label, and the
    packaged training prompts parse (codes REFGPXTO or '-')."""
    from pila.labels.classifier import load_model
    from pila.labels.train import DATA_DIR, load_txt
    m = load_model()
    assert m["categories"] == list(CATEGORIES) and len(m["bias"]) == 8
    assert all(len(w) == 8 for w in m["weights"].values())
    t = m["thresholds"]
    assert 0.0 < t[0] < 1.0 and all(a <= b for a, b in zip(t, t[1:])), t
    rows = [r for p in sorted(DATA_DIR.glob("*.txt")) for r in load_txt(p)]
    assert len(rows) >= 500
    assert sum(not r["labels"] for r in rows) >= 0.2 * len(rows)   # >= 20 % with no physics


def test_leave_one_source_out_keeps_augmented_copies_with_their_source():
    """A wrapped copy of a prompt belongs to the prompt's author group, so holding a source out never trains on
    copies of its own prompts; the static shots belong to no source and always train."""
    from pila.labels.train import augment, source_of
    rows = [{"prompt": f"A ball {i} rolls off the table.", "labels": [R]} for i in range(9)]
    origin = ["train_a.txt"] * 3 + ["set1.jsonl (style)"] * 3 + ["dev.jsonl"] * 3
    aug, base = augment(rows, origin)
    assert len(aug) == len(base)
    wrapped = [(a, b) for a, b in zip(aug, base) if b]
    # every third non-packaged prompt (positions 3 and 6) is wrapped, with its labels and its origin
    assert [b for _, b in wrapped] == ["set1.jsonl (style)", "dev.jsonl"]
    assert all("ball" in a["prompt"] and a["labels"] == [R] for a, _ in wrapped)
    assert {source_of(b) for b in base} == {"set1.jsonl (style)", "extra", "static"}
    assert source_of("train_h.txt") == "packaged"
    assert all(not a["labels"] for a, b in zip(aug, base) if not b)


def test_thresholds_count_each_source_once():
    """One author's single physics prompt and another author's ten static prompts, all at p(Fluid) = 0.32: counted
    per source (mean of micro-F1 + exact match), a threshold <= 0.30 scores (2 + 0) / 2 = 1.0 against (0 + 1) / 2 = 0.5
    above it; pooled, the ten static prompts win (0.258 below, 0.909 above). Worked out by hand."""
    import torch
    from pila.labels.train import TrainConfig, choose_thresholds
    p = torch.zeros(1, 8, dtype=torch.float64)
    p[0, CATEGORIES.index(F)] = 0.32
    a, b = (p, [[F]]), (p.repeat(10, 1), [[]] * 10)
    cfg = TrainConfig()
    per_source, v = choose_thresholds([a, b], cfg)
    assert per_source[0] == 0.30 and abs(v - 1.0) < 1e-9, (per_source, v)
    pooled, v = choose_thresholds([(torch.cat([a[0], b[0]]), a[1] + b[1])], cfg)
    assert pooled[0] > 0.32 and abs(v - 10 / 11) < 1e-3, (pooled, v)


def test_training_file_format_errors_say_what_to_do(tmp_path):
    from pila.labels.train import load_txt
    bad = tmp_path / "bad.txt"
    bad.write_text("RZ\ta ball falls\n", encoding="utf-8")
    with pytest.raises(ValueError, match="CODES<TAB>prompt"):
        load_txt(bad)


def test_result_contract():
    r = parse("A rubber ball is thrown against a brick wall and bounces back")
    assert isinstance(r, ParseResult) and r.source == "default"
    assert r.labels == [c for c in CATEGORIES if c in r.labels], "labels must be in canonical order"
    assert list(r.confidences) == list(CATEGORIES)
    assert all(0.0 <= v <= 1.0 for v in r.confidences.values())
    assert all((r.confidences[c] >= 0.5) == (c in r.labels) for c in CATEGORIES)
    y = r.multi_hot()
    assert y.shape == (8,) and y.dtype == torch.float32
    assert [CATEGORIES[i] for i in range(8) if y[i] > 0.5] == r.labels
    assert {R, X} <= set(r.labels)
    assert "ball" in r.description and "rigid-body" in r.description
    assert parse("").labels == [] and parse("").description


def test_description_names_objects_and_mechanisms():
    d = parse("the kettle starts to whistle and a white plume rises").description.lower()
    assert "kettle" in d and "boil" in d and "steam" in d
    d = parse("a melting pot of cultures").description.lower()
    assert "figurative" in d and "melting pot" in d
    d = parse("an ice cube just sits on the plate without melting").description.lower()
    assert "negated" in d and "melt" in d


def test_deterministic_and_stateless():
    prompts = [json.loads(line)["prompt"] for line in HELDOUT.read_text().splitlines()[:30]]
    first = [parse(p) for p in prompts]
    again = [parse(p) for p in reversed(prompts)][::-1]
    for a, b in zip(first, again):
        assert a.labels == b.labels and a.confidences == b.confidences and a.description == b.description


def test_cli_parse_json(capsys):
    out = _run_cli(capsys, "parse", "honey drips slowly off a spoon", "--json")
    obj = json.loads(out)
    assert obj["labels"] == [F] and obj["source"] == "default" and set(obj["confidences"]) == set(CATEGORIES)


def test_parser_errors_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="model_dir"):
        get_parser("llm")
    with pytest.raises(OSError, match="does not exist"):
        get_parser("llm", model_dir=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="default"):
        get_parser("gpt")


# ---------------------------------------------------------------- optional LLM parser

def _tiny_random_lm(path: Path) -> Path:
    """A 1-layer GPT-2 with random weights and a word-level tokenizer built offline: its output is garbage."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    from pila.compat import ensure_torchvision_importable
    ensure_torchvision_importable()
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    words = ["[UNK]", "[PAD]", "[EOS]", "{", "}", '"', ":", ",", "[", "]", "labels", "description", "Fluid",
             "Rigid", "Body", "water", "ball", "falls", "the", "a", "Prompt", "Answer", "JSON", "with", "only"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]")
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(words), n_positions=512, n_embd=16, n_layer=1, n_head=2,
                     bos_token_id=2, eos_token_id=2, pad_token_id=1)
    GPT2LMHeadModel(cfg).save_pretrained(path)
    fast.save_pretrained(path)
    return path


def test_llm_garbage_output_falls_back_with_logged_reason(tmp_path, caplog):
    model_dir = _tiny_random_lm(tmp_path / "tiny-lm")
    parser = get_parser("llm", model_dir=str(model_dir), max_new_tokens=12)
    prompt = "a ball falls into the water"
    with caplog.at_level(logging.WARNING, logger="pila.labels.llm"):
        r = parser(prompt)
    assert r.source.startswith("llm->default fallback: "), r.source
    assert any("falling back" in rec.getMessage() for rec in caplog.records)
    ref = parse(prompt)
    assert r.labels == ref.labels and r.description == ref.description


def _fake_llm(monkeypatch, tmp_path, answers):
    from pila.labels import llm as llm_mod
    model_dir = _tiny_random_lm(tmp_path / "tiny-lm")
    parser = llm_mod.LLMParser(str(model_dir), max_new_tokens=4)
    replies = iter(answers)
    seen = []

    def fake_generate(text):
        seen.append(text)
        return next(replies)
    monkeypatch.setattr(parser, "generate", fake_generate)
    return parser, seen


def test_llm_happy_path_two_steps(monkeypatch, tmp_path):
    desc = "A ceramic mug falls and strikes a tiled floor: rigid-body fall, impact."
    parser, seen = _fake_llm(monkeypatch, tmp_path, [
        f'Sure! ```json\n{{"description": "{desc}"}}\n```',
        '{"labels": ["Collision", "rigid body"], "confidences": {"Collision": 0.95, "Rigid Body": 0.8, "Fluid": 0.05}}',
    ])
    r = parser("Ceramic mug crashing into tiled floor.")
    assert r.source == "llm"
    assert r.labels == [R, X]                       # canonical order, alias accepted
    assert r.description == desc
    assert r.confidences[X] == 0.95 and r.confidences[F] == 0.05 and set(r.confidences) == set(CATEGORIES)
    assert "Ceramic mug crashing" in seen[0] and desc in seen[1]   # step 2 works on step 1's description
    assert r.multi_hot().sum() == 2


@pytest.mark.parametrize("step2, reason", [
    ('{"labels": ["Magnetism"]}', "unknown category"),
    ('{"labels": ' + json.dumps(list(CATEGORIES) + ["Fluid"]) + "}", "> 8"),
    ('{"labels": "Fluid"}', "list"),
    ('{"labels": ["Fluid"], "confidences": {"Fluid": 3}}', "confidence"),
    ("labels: Fluid", "no JSON"),
])
def test_llm_invalid_answers_fall_back(monkeypatch, tmp_path, caplog, step2, reason):
    parser, _ = _fake_llm(monkeypatch, tmp_path, ['{"description": "water is poured"}', step2])
    with caplog.at_level(logging.WARNING, logger="pila.labels.llm"):
        r = parser("Water pouring from a jug into a glass.")
    assert r.source.startswith("llm->default fallback") and reason in r.source, r.source
    assert r.labels == [F]                          # the default parser's answer
    assert any(reason in rec.getMessage() for rec in caplog.records)


def test_odd_inputs_never_error():
    odd = ["", "   ", "!!!", "123 456", "°C °C -40°F", "a" * 500, "the " * 300, "émulsion of crème brûlée",
           "no no no not never without", "it it it", "of of of", "melting pot pot melting", "\n\t",
           "A" + " very" * 100 + " hot pan", "❄️ snow ☃️ melts 🔥", "n't", "'s", "-", "drops of", "a piece of"]
    for p in odd:
        r = parse(p)
        assert r.source == "default", (p, r.source)
        assert set(r.confidences) == set(CATEGORIES) and isinstance(r.description, str) and r.description
