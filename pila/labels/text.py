"""Text front end of the default label parser (docs/method.md §9): lexicon loading, normalisation, figurative-idiom
masking, tokenisation, dictionary-guided lemmatisation, typo correction, compound merging and negation scope.

Pure Python, deterministic, no downloads: everything comes from `lexicon.txt` beside this file.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

LEXICON_PATH = Path(__file__).with_name("lexicon.txt")

# negation cues and the words that close their scope (a clause boundary)
NEGATORS = frozenset({"not", "no", "never", "without", "nothing", "none", "neither", "nor", "nobody", "nowhere"})
SCOPE_BREAKERS = frozenset({"but", "and", "while", "when", "as", "because", "though", "although", "yet", "until",
                            "so", "then", "instead", "whereas", "which", "who", "after", "before", "just", "only"})
INHERITING = frozenset({"organic", "acid", "soluble"})  # compounds with only these concepts take their head's
NEGATION_WINDOW = 4  # tokens after a cue that it can reach
PUNCT = frozenset(".,;:!?()")
DETERMINERS = frozenset({"a", "an", "the", "this", "that", "these", "those", "some", "any", "his", "her", "their", "my",
                         "your", "our", "its", "one", "two", "three", "few", "several", "many", "each", "every", "of",
                         "more", "tiny", "small", "big", "large", "single", "little", "fat", "heavy", "last", "first"})


@dataclass
class Lexicon:
    concepts: dict[str, frozenset[str]]          # concept -> lemmas (multi-word joined with "_")
    word_concepts: dict[str, frozenset[str]]     # lemma -> concepts
    irregular: dict[str, str]
    figurative: list[re.Pattern]
    materials: dict[str, tuple[float | None, float | None, float | None]]  # melt, boil, sublime (deg C)
    common: frozenset[str]
    compounds: dict[tuple[str, ...], str]       # lemma tuple -> merged token
    vocab: frozenset[str]                        # every single-word lemma the lexicon knows
    deletes: dict[str, frozenset[str]] = field(default_factory=dict)  # typo index: delete-variant -> words
    cache: dict = field(default_factory=dict)    # memoised lemmas and typo corrections (the lexicon is fixed)
    forms: dict[str, str] = field(default_factory=dict)  # inflected form -> lemma, for typo correction


def _deletes1(word: str) -> set[str]:
    return {word[:i] + word[i + 1:] for i in range(len(word))}


def _vowel_slip(a: str, b: str) -> bool:
    """Same length, one position differs and both letters there are vowels ('steem' / 'steam')."""
    diff = [i for i in range(len(a)) if a[i] != b[i]] if len(a) == len(b) else []
    return len(diff) == 1 and a[diff[0]] in "aeiou" and b[diff[0]] in "aeiou"


def _osa1(a: str, b: str) -> bool:
    """True when a and b are within one edit (insert, delete, substitute, or swap of neighbours)."""
    if a == b:
        return True
    la, lb = len(a), len(b)
    if abs(la - lb) > 1:
        return False
    if la == lb:
        diff = [i for i in range(la) if a[i] != b[i]]
        if len(diff) == 1:
            return True
        return len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]
    if la > lb:
        a, b = b, a
    return any(b[:i] + b[i + 1:] == a for i in range(len(b)))


@lru_cache(maxsize=4)
def load_lexicon(path: str | None = None, extra_vocab: frozenset[str] = frozenset()) -> Lexicon:
    """Parse `lexicon.txt` (format described in its header). Entries ending in '?' are notes and are skipped."""
    text = Path(path or LEXICON_PATH).read_text(encoding="utf-8")
    section, concepts, irregular, figurative, materials, common = None, {}, {}, [], {}, set()
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        if section == "concepts":
            name, _, words = line.partition(":")
            concepts.setdefault(name.strip(), []).append(words)
        elif section == "irregular":
            form, lemma = line.split()
            irregular[form] = lemma
        elif section == "figurative":
            figurative.append(re.compile(line))
        elif section == "materials":
            *name, melt, boil, subl = line.split()
            num = lambda v: None if v == "-" else float(v)  # noqa: E731
            materials["_".join(name)] = (num(melt), num(boil), num(subl))
        elif section == "common":
            common.update(line.split())
    # a concept line is a list of entries separated by spaces; multi-word entries are known from the
    # compound table below, so we rebuild them greedily: we store single words and registered phrases.
    return _build(concepts, irregular, figurative, materials, common, extra_vocab)


def _greedy_merge(items: list, sizes: tuple[int, ...], match) -> list:
    """Left to right, replace the longest run of `sizes` items that `match(run)` knows by what it returns."""
    out, i = [], 0
    while i < len(items):
        for n in sizes:
            run = items[i:i + n]
            merged = match(run) if len(run) == n else None
            if merged is not None:
                out.append(merged)
                i += n
                break
        else:
            out.append(items[i])
            i += 1
    return out


def _split_entries(words: str, phrases: set[str]) -> list[str]:
    def known(run):
        cand = " ".join(run)
        return cand if cand in phrases else None
    return _greedy_merge(words.split(), (3, 2), known)


# two- and three-word entries of the lexicon (kept here so that single words of a concept line are not
# accidentally glued together; a phrase must be listed here to be merged)
PHRASES = {
    "hot chocolate", "bubble bath", "whipped cream", "sour cream", "ice water", "iced tea", "iced coffee",
    "nail polish", "soy sauce", "melted chocolate", "melted butter", "perfume oil", "swimming pool", "lily pad",
    "fish tank", "spring water", "hot tub", "sugar cube", "salt crystal", "bath bomb", "bouillon cube",
    "instant coffee", "ice cube", "paper boat", "paper airplane", "bowling ball", "bowling pin", "soccer ball",
    "tennis ball", "golf ball", "beach ball", "bouncy ball", "bottle cap", "tin can", "fidget spinner",
    "hard candy", "nacho chip", "block of cheese", "chocolate bar", "bar soap", "credit card", "golf club",
    "cue ball", "pool ball", "billiard ball", "8 ball", "eight ball", "ice block", "pine cone", "book cover",
    "chess piece", "marble run", "wrecking ball", "coffee pot", "test tube", "salt shaker", "watering can",
    "spray bottle", "spray can", "pancake turner", "ice cream scooper", "ice cream", "potato peeler",
    "cheese grater", "garlic press", "rolling pin", "beating stick", "pencil sharpener", "paint roller",
    "steel wool", "hand fan", "clothes iron", "bicycle pump", "coffee stirrer", "honey dipper", "hand mixer",
    "electric beater", "garden hose", "frying pan", "cutting board", "door frame", "dirt road", "window sill",
    "bungee jumper", "coil spring", "rubber band", "elastic band", "bungee cord", "water balloon", "fishing net",
    "bow string", "guitar string", "violin string", "bubble wrap", "foam mattress", "air mattress",
    "rubber sheet", "rubber glove", "spring loaded pad", "ink pad", "stress ball", "bungee jump", "tissue paper",
    "plastic wrap", "cling film", "aluminum foil", "cotton ball", "cotton wool", "plastic bottle", "plastic bag",
    "plastic sheet", "plastic pouch", "plastic container", "plastic cup", "juice box", "toothpaste tube",
    "rubber ball", "rubber duck", "rubber toy", "dust cloud", "carbon dioxide", "spray paint", "aerosol can",
    "hair spray", "air freshener", "reed diffuser", "fog machine", "smoke machine", "fire extinguisher",
    "sparkling water", "fizzy drink", "soft drink", "baking soda", "sodium bicarbonate", "alka seltzer",
    "effervescent tablet", "dry ice", "sulfuric acid", "sulphuric acid", "hydrochloric acid", "nitric acid",
    "lemon juice", "citric acid", "plastic spoon", "rubber balloon", "bar of soap", "chewing gum", "hot plate",
    "candle flame", "hair dryer", "heat lamp", "hot pan", "hot iron", "hot stove", "stove coil", "heat gun",
    "soldering iron", "ice bath", "ice pack", "liquid nitrogen", "light bulb", "laser pointer", "neon sign",
    "magnifying glass", "disco ball", "glow stick", "roll away", "knock over", "knock down", "pop out",
    "spin around", "cut through", "slide across", "roll out", "flow out", "snap back", "spring back",
    "stretch out", "pull taut", "blow up", "ice over", "dry up", "fog up", "mist up", "steam up", "fizz away",
    "catch fire", "set alight", "light up", "switch on", "turn on", "switch off", "turn off", "bend light",
    "sea water", "salt water", "olive oil", "coconut oil", "arsenic trioxide", "ammonium chloride",
    "ice cream cone", "water vapor", "water vapour", "snow flake", "steam plume", "fire place",
    "glass surface", "wood plank", "boil off", "boil away", "rolling boil", "washing machine", "washing line", "clothes line", "blow dry", "blow dryer", "car tire", "paper towel", "hockey puck", "air filled", "tip over",
}


def _build(concepts_raw, irregular, figurative, materials, common, extra_vocab=frozenset()) -> Lexicon:
    concepts: dict[str, set[str]] = {}
    for name, lines in concepts_raw.items():
        bag = concepts.setdefault(name, set())
        for words in lines:
            for entry in _split_entries(words, PHRASES):
                if entry.endswith("?"):
                    continue
                bag.add(entry)
    # lemmatise every entry with the same function used on prompts so that matching is consistent
    singles = {w for bag in concepts.values() for e in bag for w in e.split()}
    entries = {e for bag in concepts.values() for e in bag if " " not in e}
    singles |= set(irregular.values()) | {w for p in PHRASES for w in p.split()} | set(materials) | set(extra_vocab)
    # a word that only occurs inside phrases ('rolling' of 'rolling pin') must not block its own lemmatisation
    singles = {w for w in singles if w in entries or w in materials or not any(c in singles for c in _candidates(w)[1:])}
    vocab = frozenset(singles)
    pre = Lexicon(concepts={}, word_concepts={}, irregular=irregular, figurative=figurative, materials=materials,
                  common=frozenset(common), compounds={}, vocab=vocab)
    compounds: dict[tuple[str, ...], str] = {}
    for phrase in PHRASES | {e for bag in concepts.values() for e in bag if " " in e} | \
            {m.replace("_", " ") for m in materials if "_" in m}:
        key = tuple(lemmatize(w, pre) for w in phrase.split())
        compounds[key] = "_".join(phrase.split())
    final: dict[str, frozenset[str]] = {}
    for name, bag in concepts.items():
        final[name] = frozenset("_".join(e.split()) if " " in e else lemmatize(e, pre, irregular=False)
                                for e in bag)
    word_concepts: dict[str, set[str]] = {}
    for name, bag in final.items():
        for w in bag:
            word_concepts.setdefault(w, set()).add(name)
    # typo index over lemmas and their regular inflections ('meltng' -> 'melting' -> melt)
    forms: dict[str, str] = {}
    for w in vocab:
        if len(w) >= 4 and w.isalpha():
            forms.setdefault(w, w)
            if w in entries:
                stem = w[:-1] if w.endswith("e") else w
                for f in (w + "s", w + "es", stem + "ing", stem + "ed", w + "d"):
                    forms.setdefault(f, w)
    deletes: dict[str, set[str]] = {}
    for f in forms:
        for d in _deletes1(f) | {f}:
            deletes.setdefault(d, set()).add(f)
    return Lexicon(concepts=final, word_concepts={k: frozenset(v) for k, v in word_concepts.items()},
                   irregular=irregular, figurative=figurative, materials=materials, common=frozenset(common),
                   compounds=compounds, vocab=vocab, deletes={k: frozenset(v) for k, v in deletes.items()},
                   forms=forms)


def _candidates(w: str) -> list[str]:
    """Possible lemmas of an inflected word, most literal first (dictionary-guided suffix stripping)."""
    out = [w]
    if len(w) > 3 and w.endswith("ies"):
        out.append(w[:-3] + "y")
    if len(w) > 3 and w.endswith("ves"):
        out += [w[:-3] + "f", w[:-3] + "fe"]
    if len(w) > 3 and w.endswith("es"):
        out.append(w[:-2])
    if len(w) > 2 and w.endswith("s") and not w.endswith("ss"):
        out.append(w[:-1])
    if len(w) > 3 and w.endswith("ied"):
        out.append(w[:-3] + "y")
    for suf in ("ed", "ing", "er", "est"):
        if len(w) > len(suf) + 2 and w.endswith(suf):
            stem = w[: -len(suf)]
            out += [stem, stem + "e"]
            if len(stem) > 2 and stem[-1] == stem[-2]:
                out.append(stem[:-1])
            if stem.endswith("i"):
                out.append(stem[:-1] + "y")
    if len(w) > 4 and w.endswith("ly"):
        out.append(w[:-2])
    if len(w) > 4 and w.endswith("y") and not w.endswith("ly"):  # steamy -> steam, fizzy -> fizz, frosty -> frost
        out += [w[:-1], w[:-1] + "e"]
    return out


def lemmatize(word: str, lex: Lexicon, irregular: bool = True) -> str:
    key = (word, irregular)
    hit = lex.cache.get(key)
    if hit is None:
        hit = lex.cache[key] = _lemmatize(word, lex, irregular)
    return hit


def _lemmatize(word: str, lex: Lexicon, irregular: bool = True) -> str:
    if irregular and word in lex.irregular:
        return lex.irregular[word]
    cands = _candidates(word)
    for c in cands:
        if c in lex.vocab:
            return c
    for c in cands:
        if c in lex.common:
            return c
    return word


def correct_typo(word: str, lex: Lexicon) -> str | None:
    """A lexicon lemma within one edit of `word` (or of one of its suffix-stripped forms), else None.
    Only words of >= 5 letters that are neither known nor common are corrected; ties are refused."""
    if len(word) < 5 or word in lex.common or not word.isalpha():
        return None
    cands = _candidates(word)
    if any(c in lex.common for c in cands):
        return None
    for cand in cands:
        if len(cand) < 5:
            continue
        hits = set()
        for d in _deletes1(cand) | {cand}:
            hits |= {v for v in lex.deletes.get(d, ()) if _osa1(cand, v)}
        # typos keep the first letter; five-letter words only by a doubled or dropped letter or a vowel slip
        hits = {h for h in hits if len(h) >= 5 and h[0] == cand[0] and (len(cand) > 5 or len(h) != len(cand)
                                                                         or (cand == word and _vowel_slip(cand, h)))}
        # an inflected form ('melting') is only reached through a dropped letter ('meltng'): substitutions and
        # extra letters between real inflected words ('creaks'/'creeks', 'fizzles'/'fizzes') are too risky
        hits = {h for h in hits if lex.forms.get(h, h) == h or (len(h) == len(cand) + 1 and len(cand) >= 5)}
        lemmas = {lex.forms.get(h, h) for h in hits}
        if len(lemmas) == 1:
            return next(iter(lemmas))
    return None


@dataclass
class Token:
    text: str            # surface form (after normalisation)
    lemma: str
    neg: bool = False    # inside a negation scope
    concepts: frozenset[str] = frozenset()
    fixed: str | None = None  # original word when typo-corrected


_TOKEN_RE = re.compile(r"-?\d+(?:\.\d+)?|[a-z]+(?:'[a-z]+)?|[.,;:!?()]")


def normalise(prompt: str) -> str:
    t = prompt.lower()
    t = t.replace("\u2019", "'").replace("\u2018", "'").replace("`", "'").replace("\u201c", '"').replace("\u201d", '"')
    t = re.sub(r"\b(can)not\b", r"\1 not", t)
    t = re.sub(r"\bwon't\b", "will not", t)
    t = re.sub(r"\bcan't\b", "can not", t)
    t = re.sub(r"n't\b", " not", t)
    t = re.sub(r"\b(dont|doesnt|didnt|isnt|wasnt|arent|werent|wont|cant|shouldnt|wouldnt|couldnt|hasnt|havent)\b",
               lambda m: m.group(1)[:-2] + " not" if not m.group(1).startswith(("wont", "cant")) else "will not", t)
    t = re.sub(r"(?<=[a-z])-(?=[a-z])", " ", t)  # air-filled -> air filled, red-hot -> red hot
    t = re.sub(r"'s\b", "", t)
    t = re.sub(r"([a-z])\1{2,}", r"\1\1", t)  # casual spelling: 'ooozing' -> 'oozing'
    return t


@lru_cache(maxsize=8)
def _figurative_union(patterns: tuple[str, ...]) -> re.Pattern:
    return re.compile("|".join(f"(?:{p})" for p in patterns))


def mask_figurative(text: str, lex: Lexicon) -> tuple[str, list[str]]:
    """Replace figurative idioms ('a melting pot of cultures', 'a cold stare', 'breaking news') by a clause
    boundary, so that their physics words are not read literally. Returns the new text and the idioms found."""
    found = []

    def _sub(m):
        found.append(m.group(0))
        return " , "
    text = _figurative_union(tuple(p.pattern for p in lex.figurative)).sub(_sub, text)
    return text, found


def tokenize(text: str, lex: Lexicon) -> list[Token]:
    words = _TOKEN_RE.findall(text)
    toks: list[Token] = []
    for w in words:
        w = w.strip("'")
        if not w:
            continue
        if w in PUNCT or w[0].isdigit() or w[0] == "-":
            toks.append(Token(w, w))
            continue
        lemma, fixed = lemmatize(w, lex), None
        if lemma not in lex.vocab and w not in lex.common and lemma not in lex.common and w not in lex.irregular:
            key = ("typo", w)
            if key not in lex.cache:
                lex.cache[key] = correct_typo(w, lex)
            corr = lex.cache[key]
            if corr is not None:
                lemma, fixed = corr, w
        toks.append(Token(w, lemma, fixed=fixed))
    toks = _merge_compounds(toks, lex)
    _mark_negation(toks)
    for t in toks:
        t.concepts = lex.word_concepts.get(t.lemma, frozenset())
        if "_" in t.lemma and t.concepts <= INHERITING:
            # a compound is its head noun unless listed otherwise: 'rubber balloon' is a balloon
            t.concepts = t.concepts | lex.word_concepts.get(t.lemma.rsplit("_", 1)[1], frozenset())
    return toks


def _merge_compounds(toks: list[Token], lex: Lexicon) -> list[Token]:
    def known(run):
        merged = lex.compounds.get(tuple(t.lemma for t in run))
        return None if merged is None else Token(" ".join(t.text for t in run), merged)
    return _greedy_merge(toks, (4, 3, 2), known)


def _mark_negation(toks: list[Token]) -> None:
    """Tokens up to NEGATION_WINDOW after a cue ('not', 'no', 'without', "n't") are negated, until a clause
    boundary (punctuation or a conjunction). 'not only' and 'nothing but' are not negations."""
    i = 0
    while i < len(toks):
        t = toks[i].text
        nxt = toks[i + 1].text if i + 1 < len(toks) else ""
        if (t == "instead" and nxt == "of") or (t == "rather" and nxt == "than"):
            t = "not"   # 'instead of melting', 'rather than breaking' negate what follows
            i += 1
        if t in NEGATORS and not (t == "not" and nxt == "only") and not (t == "nothing" and nxt == "but"):
            j = i + 1
            while j < len(toks) and j <= i + NEGATION_WINDOW:
                if toks[j].text in PUNCT or toks[j].text in SCOPE_BREAKERS:
                    break
                toks[j].neg = True
                j += 1
            i = j
        else:
            i += 1


_TEMP_RE = re.compile(
    r"(minus\s+|-\s*)?(\d+(?:\.\d+)?)\s*(?:°|º|˚|degrees?|deg\.?)\s*(c\b|f\b|celsius|fahrenheit|centigrade)?")
_WORD_TEMPS = {"freezing point": 0.0, "below freezing": -5.0, "below zero": -5.0, "sub zero": -5.0, "subzero": -5.0,
               "boiling point": 100.0}


def find_temperatures(text: str) -> list[tuple[float, int]]:
    """Numeric temperatures in deg C with their character offsets ('-20°C', '212 degrees F' -> 100)."""
    out = []
    for m in _TEMP_RE.finditer(text):
        v = float(m.group(2))
        if m.group(1):
            v = -v
        unit = (m.group(3) or "c")[0]
        if unit == "f":
            v = (v - 32.0) * 5.0 / 9.0
        out.append((v, m.start()))
    return out
