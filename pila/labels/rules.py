"""Evidence stage of the default physics label parser: lexicon + linguistic rules, no network, deterministic
(docs/method.md §9). `classifier.py` weighs this evidence with a trained linear model to decide the labels.

Step 1 of the paper's two-step parsing (rewrite into a physics description) and step 2 (map to categories) are
done together here: the prompt is lemmatised, figurative idioms and negated words are masked, then rules built
from physics knowledge turn materials, objects and mechanism verbs into evidence for each of the 8 categories
of docs/method.md §4. Evidence s >= 0 becomes a confidence 1 - 2^(-2 s) (s = 0.5 -> 0.5, the label threshold).

The labelling conventions are those of docs/labels.md (the dev set data/physics_labels_dev.jsonl is hand labels
over VBench-2.0 and VideoPhy prompts, see data/README.md).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ..taxonomy import CATEGORIES
from .text import DETERMINERS, PUNCT, Lexicon, Token, find_temperatures, load_lexicon, mask_figurative, normalise, tokenize

THRESHOLD = 0.5  # a category is active when its confidence is >= this


@lru_cache(maxsize=1)
def lexicon() -> Lexicon:
    """The packaged lexicon, with every word these rules mention added to the lemmatiser's vocabulary."""
    words = frozenset(re.findall(r'"([a-z]{3,})"', Path(__file__).read_text(encoding="utf-8")))
    return load_lexicon(None, words)

NOUN_CLASSES = ("liquid", "water_body", "solid", "container", "tool", "surface", "elastic_intrinsic", "fabric", "soft",
                "gas", "human", "animal", "body_part", "heat_source", "light_source", "granular", "soluble")
# words that are a noun or a verb depending on context: noun concepts kept only in a noun context
# value: the reading when the context does not decide ("n" noun, "v" verb)
AMBIGUOUS = {"stack": "v", "pile": "v", "drop": "v", "tear": "v", "can": "v", "sink": "v", "spring": "n", "fly": "v", "stick": "n", "match": "n",
             "iron": "n", "fall": "v", "top": "n", "pitch": "v", "stamp": "n", "file": "n", "bat": "n", "rock": "n",
             "pop": "v", "pool": "n", "brush": "n", "comb": "n", "mop": "n", "fan": "n", "hose": "n", "block": "n",
             "chip": "n", "screw": "n", "nail": "n", "drum": "n", "ring": "n", "bowl": "n", "tip": "v", "jet": "n",
             "tap": "n", "swing": "v", "roll": "v", "wind": "n", "sand": "n", "strip": "v", "coat": "n", "slide": "v",
             "land": "v", "plane": "n", "pin": "n", "stream": "n", "shower": "n", "drain": "n", "wave": "n",
             "catch": "v", "hook": "n", "thread": "n", "zipper": "n", "press": "v", "pump": "n", "spray": "n",
             "stroke": "v", "saw": "v", "shake": "v", "stamp_": "n", "float": "v", "bounce": "v", "flip": "v"}
VERB_CUES = {"to", "will", "would", "can", "could", "may", "might", "must", "should", "not", "i", "you", "we", "they",
             "he", "she", "it", "who", "that", "and", "then", "also", "slowly", "gently", "quickly", "be", "being",
             "been", "is", "are", "was", "were", "starts", "start", "begin", "begins", "to"}
ADJ_CUES = {"wooden", "metallic", "plastic", "ceramic", "hot", "cold", "warm", "big", "small", "large", "tiny", "little", "old", "new", "red", "blue", "green",
            "white", "black", "yellow", "clear", "heavy", "light", "sharp", "soft", "hard", "empty", "full", "kitchen",
            "garden", "bathroom", "wet", "dry", "dirty", "clean", "fresh", "thick", "thin", "fine", "leaky", "rain",
            "sea", "salt", "fresh", "brown", "orange", "purple", "pink", "golden", "silver", "frozen", "melted"}

ONTO = {"onto", "on", "into", "against", "upon", "off", "in"}
NOUNS = frozenset(NOUN_CLASSES) | {"vehicle", "quantity"}
# substances whose verb use still means the substance is there ('painting a wall', 'steaming milk')
MASS_NOUNS = {"water", "oil", "paint", "ink", "glue", "cement", "plaster", "steam", "smoke", "dust", "ice", "fire",
              "flame", "frost", "mist", "foam", "fizz", "bubble", "light", "glow", "ripple", "flood", "icing",
              "butter", "grease", "wax", "varnish", "lather", "spray", "sand"}
TOY_WORDS = {"toy", "rubber", "plastic", "wooden", "stuffed", "inflatable", "paper", "stone", "metal", "glass",
             "ceramic", "porcelain", "origami", "plush", "clockwork", "wind-up"}
CLAUSE_WORDS = {"with", "as", "while", "when", "after", "before", "because", "then", "which", "that", "until", "but"}
PREPOSITIONS = {"in", "into", "on", "onto", "off", "at", "to", "from", "over", "under", "across", "along", "through",
                "against", "by", "with", "around", "down", "up", "inside", "out", "of", "toward", "towards", "upon"}
SOLID_MOVER = {"solid", "container", "tool", "vehicle"}
NOT_MOVER = {"liquid", "water_body", "human", "animal", "body_part", "gas", "fabric", "elastic_intrinsic"}
DIRECTIONAL = {"into", "over", "off", "away", "across", "down", "through", "flying", "out"}
SPIN_LIKE = {"spin", "rotate", "twirl", "shake", "jiggle", "rattle", "circle", "revolve", "swing", "sway", "push",
             "pull", "row", "wheel", "move", "tilt", "carry", "lift", "raise"}
STATIC_MOTION = {"lean", "teeter", "stack", "pile", "balance"}
FLIGHT = {"drift", "float", "rise", "fly", "soar", "ascend", "sail", "glide", "flutter", "fall", "blow"}
THROW_LIKE = {"throw", "toss", "flip", "drop", "kick", "roll", "push", "lift", "hurl", "fling", "juggle", "launch",
              "shoot", "lob", "pitch", "bounce", "spin", "slide", "drag", "stack", "topple", "tip_over", "flick"}
STRONG_STRIKE = {"hit", "strike", "smack", "whack", "knock", "punch", "kick", "bat", "swat", "slap", "thwack", "ram",
                 "clobber", "hammer"}
PROJECTILE_TAIL = ("ball",)
PROJECTILES = {"puck", "hockey_puck", "pin", "bowling_pin", "domino", "dart", "frisbee", "marble", "stone", "rock",
               "pebble", "coin", "can", "tin_can", "nail", "shuttlecock", "hail", "hailstone", "snowball"}
HEAT_WORDS = {"weld", "solder", "blow_dry", "blow_dryer", "hot", "warm", "heat", "sun", "sunlight", "fire", "flame", "stove", "oven", "microwave", "pan",
              "frying_pan", "skillet", "temperature", "heater", "radiator", "lamp", "hand", "body", "sizzle", "boil",
              "burner", "grill", "toaster", "hair_dryer", "iron", "forge", "furnace", "blowtorch", "torch"}
CHANGE_VERBS = {"get", "become", "turn", "grow", "go", "gets", "getting", "becomes", "becoming", "turning", "turns",
                "grows", "growing", "going", "gone", "got", "became", "turned", "grew", "went", "run", "ran", "runs",
                "stays", "stay", "kept", "keep", "keeps"}
COLOUR_FLAME = {"vivid", "colorful", "colourful", "color", "colour", "colored", "coloured", "green", "blue", "violet",
                "crimson", "purple", "brilliant", "bright", "unique", "lilac", "golden"}
VAPOURS = {"steam", "vapor", "vapour", "water_vapor", "water_vapour", "mist", "fog", "moisture", "breath", "humid", "dew",
           "humidity"}


def conf_from_score(s: float) -> float:
    return 0.0 if s <= 0 else 1.0 - 2.0 ** (-2.0 * s)


@dataclass
class Evidence:
    score: dict[str, float] = field(default_factory=lambda: {c: 0.0 for c in CATEGORIES})
    why: dict[str, list[str]] = field(default_factory=lambda: {c: [] for c in CATEGORIES})
    implied: list[str] = field(default_factory=list)  # objects inferred from indirect cues (kettle -> water)

    def add(self, cat: str, w: float, reason: str) -> None:
        self.score[cat] += w
        if reason not in self.why[cat]:
            self.why[cat].append(reason)

    def cap(self, cat: str, value: float) -> None:
        self.score[cat] = min(self.score[cat], value)


class Scene:
    """A tokenised prompt with concept look-ups that skip negated and figurative words."""

    def __init__(self, prompt: str, lex: Lexicon):
        self.prompt = prompt
        self.lex = lex
        text = normalise(prompt)
        self.temps = find_temperatures(text)
        self.text, self.figurative = mask_figurative(text, lex)
        self.toks: list[Token] = tokenize(self.text, lex)
        self._disambiguate()
        self.lemmas = [t.lemma for t in self.toks]
        self.live = [t for t in self.toks if not t.neg]
        self.negated = [t for t in self.toks if t.neg and t.concepts]
        self._index: dict[str, list[int]] = {}
        for i, t in enumerate(self.toks):
            if not t.neg:
                for c in t.concepts:
                    self._index.setdefault(c, []).append(i)
        self.live_lemmas = {t.lemma for t in self.live} | {p for t in self.live if "_" in t.lemma
                                                            for p in t.lemma.split("_")}

    def _noun_ctx(self, i: int) -> bool:
        """Is the ambiguous word at i used as a noun? Cues first, then the word's default reading."""
        t = self.toks[i]
        prev = self.toks[i - 1] if i > 0 else None
        nxt = self.toks[i + 1] if i + 1 < len(self.toks) else None
        if t.text.endswith(("ing", "ed")) and t.text != t.lemma and t.text not in {"ceiling", "railing"}:
            return False
        if nxt is not None and nxt.text == "of" and not (prev is not None and prev.concepts & NOUNS and
                                                          t.text.endswith("s") and AMBIGUOUS.get(t.lemma) == "v"):
            return True   # 'a drop of', 'a stack of' (but 'the bottle falls of[f] the table')
        if prev is not None and (prev.text in DETERMINERS or prev.text.isdigit()):
            return True
        if prev is not None and prev.text in VERB_CUES:
            return False
        if nxt is not None and nxt.text in DETERMINERS - {"of"}:
            return False  # "winds the spring", "sinks a ball"
        if nxt is not None and prev is not None and prev.concepts & NOUNS and nxt.text in {
                "through", "into", "onto", "down", "across", "along", "over", "from", "out", "off", "away", "up", "against"}:
            return False  # "sunlight streams through", "a stone sinks into"
        if prev is not None and (prev.text in ADJ_CUES or prev.text.endswith(("ing", "y", "ful", "ous")) and
                                 not prev.concepts & NOUNS and not prev.text.endswith("ly")):
            return True
        if prev is not None and prev.concepts & {"liquid", "granular", "a_hot", "a_cold", "a_wet", "water_body"}:
            return True   # "leaky tap", "rain shower", "kitchen sink"
        return AMBIGUOUS.get(t.lemma, "n") == "n"

    def _disambiguate(self) -> None:
        nouns = set(NOUN_CLASSES)
        for i, t in enumerate(self.toks):
            if t.text.endswith("y") and " " not in t.text and t.text != t.lemma and t.concepts and \
                    t.text not in self.lex.irregular:
                # '-y' adjectives of nouns ('creamy', 'sandy', 'frothy') describe texture, not the stuff itself,
                # except for gas words ('steamy', 'fizzy', 'smoky', 'frothy')
                t.concepts = frozenset(c for c in t.concepts if c in {"gas", "v_gas", "carbonated"})
                continue
            if t.lemma == "fire" and {"slingshot", "pebble", "catapult", "crossbow", "bow", "dart", "bullet", "gun", "cannon", "arrow", "missile", "rifle", "pistol", "shot", "cannonball",
                     "projectile", "nerf"} & {x.lemma for x in self.toks} and t.text in {"fire", "fires", "fired",
                                                                                        "firing"}:
                t.lemma, t.concepts = "shoot", frozenset({"v_motion"})   # 'a bullet is fired': shooting, not fire
                continue
            if t.lemma == "light" and t.text in {"light", "lights", "lighting"} and not self._noun_ctx(i) and \
                    {"candle", "match", "matchstick", "fire", "wick", "cigarette", "stove", "fireplace", "campfire",
                     "bonfire", "fuse", "torch", "lantern", "grill", "barbecue", "firework"} & \
                    {x.lemma for x in self.toks[i + 1:i + 5]}:
                t.lemma, t.concepts = "ignite", frozenset({"v_burn"})   # 'lighting a candle' ignites it
                continue
            if t.lemma in {"sheet", "slab", "pane", "plate", "block", "chunk", "piece", "shard", "slice"} and \
                    self.text_at(i + 1) == "of" and self.lemma_at(i + 2) in {"ice", "glass", "metal", "steel", "iron",
                                                                            "wood", "rock", "stone", "plywood",
                                                                            "marble", "concrete", "aluminum"}:
                t.concepts = frozenset({"solid"})   # 'a sheet of ice' is a rigid slab, not a cloth sheet
                continue
            if t.lemma == "spring" and (self.text_at(i - 1) in {"in", "this", "last", "next", "early", "late", "of"} or
                                        self.lemma_at(i + 1) in {"sun", "day", "morning", "time", "season", "rain",
                                                                 "weather", "break", "evening", "afternoon", "air",
                                                                 "flower", "garden", "breeze"}):
                t.concepts = frozenset()   # the season, not a coil spring
                continue
            if t.text == "lit" and self.text_at(i + 1) not in {"up", "by", "with"}:
                t.lemma, t.concepts = "ignite", frozenset({"v_burn"})   # 'a lit match' burns
                continue
            if t.concepts & {"animal", "human"} and i > 0 and self.toks[i - 1].text in TOY_WORDS:
                t.concepts = frozenset({"solid"})   # 'toy duck', 'rubber duck', 'paper man' are objects
                continue
            if t.lemma in AMBIGUOUS and t.concepts:
                noun = self._noun_ctx(i)
                keep = {c for c in t.concepts if (c in nouns) == noun or not (c in nouns or c.startswith("v_"))}
                if t.lemma in MASS_NOUNS:
                    # mass nouns: a verb use still means the stuff is there ("steaming", "watering"), keep both
                    # unless it is clearly a verb form of a flow noun used as a verb ("waving", "sanding")
                    keep = set(t.concepts)
                t.concepts = frozenset(keep)
            elif t.concepts and t.text.endswith(("ing", "ed")) and t.text != t.lemma and " " not in t.text and \
                    t.text not in self.lex.vocab and t.lemma not in MASS_NOUNS:
                # inflected verb forms are not nouns ("watered", "piling"); adjectival states keep their verb class
                t.concepts = frozenset(c for c in t.concepts if c not in nouns)

    # ---- look-ups over live (non-negated) tokens ----
    def idx(self, concept: str) -> list[int]:
        return list(self._index.get(concept, ()))

    def has(self, concept: str) -> bool:
        return concept in self._index

    def words(self, concept: str) -> list[str]:
        return list(dict.fromkeys(self.toks[i].lemma for i in self._index.get(concept, ())))

    def lemma_at(self, i: int) -> str:
        return self.toks[i].lemma if 0 <= i < len(self.toks) else ""

    def text_at(self, i: int) -> str:
        return self.toks[i].text if 0 <= i < len(self.toks) else ""

    def subject_of(self, i: int) -> Token | None:
        """The nearest noun before a verb in the same clause (a crude subject; the patient for passives)."""
        for j in range(i - 1, max(-1, i - 7), -1):
            t = self.toks[j]
            if t.text in PUNCT or t.text in CLAUSE_WORDS:
                return None
            if t.text in {"it", "they", "which"}:
                return self._antecedent(j)   # 'the ball ..., it just rolled away'
            if t.concepts & NOUNS:
                if j >= 2 and self.toks[j - 1].text == "of" and self.toks[j - 2].concepts & (NOUNS - {"quantity"}):
                    return self.toks[j - 2]   # 'a glass of water shatters': the glass
                return t
        return None

    def _antecedent(self, j: int) -> Token | None:
        """The sentence's first thing-noun before a pronoun (a minimal coreference: the topic)."""
        for t in self.toks[:j]:
            if t.concepts & (NOUNS - {"human", "animal", "body_part", "quantity", "surface"}) and not t.neg:
                return t
        return None

    def unknown_object(self, i: int) -> Token | None:
        """The direct object when it is a word the lexicon does not know (and not a common word)."""
        for j in range(i + 1, min(len(self.toks), i + 5)):
            t = self.toks[j]
            if t.text in PUNCT or t.text in PREPOSITIONS or t.text in CLAUSE_WORDS or t.neg:
                return None
            if t.text in DETERMINERS or t.text in ADJ_CUES or t.text.isdigit() or t.text in self.lex.common and \
                    j + 1 < len(self.toks) and self.toks[j + 1].text not in PUNCT | PREPOSITIONS:
                continue
            if t.concepts or not t.text.isalpha() or t.text in self.lex.common:
                return None
            return Token(t.text, t.lemma, concepts=frozenset({"solid"}))
        return None

    def object_of(self, i: int) -> Token | None:
        """The direct object: the first noun after the verb, allowing determiners/adjectives in between."""
        for j in range(i + 1, min(len(self.toks), i + 5)):
            t = self.toks[j]
            if t.text in PUNCT or t.text in PREPOSITIONS or t.text in CLAUSE_WORDS:
                return None
            if t.text in DETERMINERS:
                continue  # 'drops her ice cream cone': 'her' is a determiner here
            if t.concepts & NOUNS:
                return t
        return None


def _attributive(scene: Scene, i: int) -> bool:
    """An adjective directly before a noun ('hot soup', 'cold stare'), as opposed to a predicate ('gets hot')."""
    nxt = scene.toks[i + 1] if i + 1 < len(scene.toks) else None
    return nxt is not None and nxt.text not in PUNCT and bool(nxt.concepts & set(NOUN_CLASSES) or
                                                               nxt.text.replace(" ", "").isalpha()
                                                               and nxt.text not in {"in", "on", "at", "and", "as",
                                                                                    "from", "to", "with", "by", "for",
                                                                                    "when", "while", "enough", "now"})


def analyse(prompt: str, lex: Lexicon | None = None) -> tuple[Evidence, Scene]:
    lex = lex or lexicon()
    sc = Scene(prompt, lex)
    ev = Evidence()
    L = sc.live_lemmas

    # ---------------- objects present ----------------
    liquids, modifier_liquids = [], []
    squeezable_liquid = False
    for i, t in enumerate(sc.toks):
        if "_" in t.lemma and not t.neg and not t.concepts & {"liquid", "water_body"} and \
                lex.word_concepts.get(t.lemma.split("_")[0], frozenset()) & {"liquid"} and \
                t.concepts & {"container", "soft", "solid", "tool", "elastic_intrinsic", "fabric"}:
            modifier_liquids.append(t.lemma.split("_")[0])   # 'juice box', 'toothpaste tube'
            if t.concepts & {"container", "soft"} and not t.concepts & {"elastic_intrinsic"}:
                squeezable_liquid = True
    for i in sc.idx("liquid") + sc.idx("water_body"):
        if sc.text_at(i - 1) in {"empty", "drained", "dry", "frozen", "iced"} or sc.text_at(i - 2) in {"empty",
                                                                                                     "drained"}:
            continue  # 'an empty swimming pool'
        if sc.text_at(i - 1) == "of" and sc.text_at(i - 2) in {"piece", "pieces", "block", "bar", "chunk", "slab",
                                                              "stick", "cube", "lump", "crystal", "crystals", "grain"}:
            continue  # 'a piece of boric acid' is a solid
        nxt = sc.toks[i + 1] if i + 1 < len(sc.toks) else None
        if nxt is not None and not nxt.neg and nxt.concepts & {"container", "solid", "tool", "surface", "fabric",
                                                                 "elastic_intrinsic", "soft", "gas", "heat_source",
                                                                 "granular"} \
                and not nxt.concepts & {"liquid", "water_body"}:
            modifier_liquids.append(sc.toks[i].lemma)      # 'coffee cup', 'water bottle', 'water vapor'
        elif nxt is not None and nxt.lemma in {"solution", "mixture"} and sc.toks[i].lemma in {"sugar", "salt"}:
            liquids.append(nxt.lemma)
        else:
            liquids.append(sc.toks[i].lemma)
    solids = [sc.toks[i].lemma for i in sc.idx("solid") + sc.idx("container") + sc.idx("tool")]
    humans = sc.words("human") + sc.words("animal")
    surfaces = sc.words("surface")
    strike_tools = set(sc.words("strike_tool"))
    elastics = sc.words("elastic_intrinsic")
    fabrics = sc.words("fabric")
    softs = sc.words("soft")

    def vb(concept: str) -> list[int]:
        return sc.idx(concept)

    motion, free_impact, strike = vb("v_motion"), vb("v_free_impact"), vb("v_strike")
    cut, friction, flow = vb("v_cut"), vb("v_friction"), vb("v_flow")
    deform, squeeze, gasv = vb("v_deform"), vb("v_squeeze"), vb("v_gas")
    melt, freeze, boil = vb("v_melt"), vb("v_freeze"), vb("v_boil")
    evap, cond, subl, diss = vb("v_evaporate"), vb("v_condense"), vb("v_sublimate"), vb("v_dissolve")
    burn, heat, cool = vb("v_burn"), vb("v_heat"), vb("v_cool")
    lightv, reflect = vb("v_light"), vb("v_reflect")

    # "frozen peas", "boiled pasta water", "polished table": participles used as adjectives describe a state,
    # not the event; bare "warm"/"cool" are verbs only with a verb cue ("to warm", "warms up", "cool the tea")
    def eventive(idxs: list[int]) -> list[int]:
        out = []
        for i in idxs:
            t = sc.toks[i]
            participle = t.text != t.lemma and (t.text.endswith(("ed", "en")) or t.text in {"lit", "burnt", "spilt",
                                                                                           "frozen", "molten"})
            if participle and t.text != "lit" and _attributive(sc, i) and sc.text_at(i - 1) not in {"is", "are", "was", "were", "be",
                                                                               "being", "been", "get", "gets", "got"}:
                continue
            out.append(i)
        return out

    def verb_use(idxs: list[int]) -> list[int]:
        out = []
        for i in eventive(idxs):
            t = sc.toks[i]
            if t.text == t.lemma and "_" not in t.lemma:
                prev, nxt = sc.text_at(i - 1), sc.text_at(i + 1)
                if not (prev in VERB_CUES or nxt in {"up", "down"} or (nxt in DETERMINERS - {"of"} and
                                                                      t.text not in {"cold", "hot"})):
                    continue
            out.append(i)
        return out

    motion, free_impact, strike, cut = eventive(motion), eventive(free_impact), eventive(strike), eventive(cut)
    friction, deform, squeeze, gasv = eventive(friction), eventive(deform), eventive(squeeze), eventive(gasv)
    evap, cond, subl, diss = eventive(evap), eventive(cond), eventive(subl), eventive(diss)
    melt_ev = list(melt)  # 'melted ice cream dripping' still tells of melting (dev conventions)
    freeze_ev, boil_ev = eventive(freeze), eventive(boil)
    heat_ev, cool_ev, burn_ev = verb_use(heat), verb_use(cool), eventive(burn)
    boil_attr = [i for i in boil if sc.toks[i].text == "boiling" and
                 sc.toks[i + 1 if i + 1 < len(sc.toks) else i].concepts & {"container", "heat_source"}]
    boil_ev = [i for i in boil_ev if i not in boil_attr]  # 'steam from a boiling pot': the pot, not the event

    # ---------------- indirect descriptions ----------------
    kettle = "kettle" in L
    if kettle and (L & {"whistle", "boil", "steam", "plume", "hiss", "bubble", "click", "sing", "scream", "shriek"}):
        boil_ev = boil_ev + [-1]
        if L & {"whistle", "steam", "plume", "hiss", "scream", "shriek", "vapor", "cloud", "puff"}:
            ev.add("Compressible Flow", 1.0, "steam jet from the kettle")
        liquids.append("water")
        ev.implied += ["water", "steam"]
    if "plume" in L or ("cloud" in L and L & {"white", "rise", "billow", "puff"}):
        ev.add("Compressible Flow", 1.0, "rising plume")
    if "sizzle" in L:
        ev.add("Thermal", 1.0, "sizzling (heating)")
        if L & {"butter", "ice", "wax", "cheese", "chocolate", "fat", "snow"}:
            melt_ev = melt_ev + [-1]
            liquids.append("melt")
    target = None  # 'turns into water', 'turning into a solid block of ice'
    for i, t in enumerate(sc.toks):
        if t.lemma in {"turn", "change", "transform", "become"} and not t.neg and \
                (sc.text_at(i + 1) in {"into", "to"} or t.lemma == "become"):
            for t2 in sc.toks[i + 1: i + 8]:
                if t2.text in PUNCT:
                    break
                if t2.lemma in {"water", "liquid", "slush", "puddle", "steam", "vapor", "vapour", "gas", "ice", "solid",
                                "crystal", "frost", "mist"}:
                    target = {"puddle": "water", "crystal": "ice", "frost": "ice", "vapour": "vapor"}.get(t2.lemma,
                                                                                                         t2.lemma)
                    break
            if target:
                break
    if target:
        if target in liquids:
            liquids.remove(target)   # the product of melting is not a flowing liquid by itself
        if target in {"water", "liquid", "slush"}:
            melt_ev = melt_ev + [-1]
        elif target in {"ice", "solid"}:
            freeze_ev = freeze_ev + [-1]
        else:
            evap = evap + [-1]

    meltable = L & {"ice", "ice_cube", "snow", "snowflake", "snowman", "butter", "chocolate", "wax", "cheese", "popsicle",
                    "ice_cream", "icicle", "frost", "ice_block", "glacier", "iceberg"}
    hot_contact = any(t.text in {"hot", "heated", "warm", "scorching", "sizzling", "red"} for t in sc.live) or \
        bool(sc.words("heat_source")) or bool(L & {"sun", "sunlight", "sunshine", "radiator", "fire", "flame"})
    impact_motion = any(sc.toks[i].lemma in {"drop", "fall", "throw", "toss", "kick", "knock", "hurl", "fling", "slide",
                                             "roll", "smash", "crash"} for i in motion + strike + free_impact)
    if meltable and hot_contact and not impact_motion and not melt_ev and not freeze_ev and not any(
            t.neg and t.concepts & {"v_melt"} for t in sc.toks) and not L & {"freezer", "fridge", "refrigerator"}:
        melt_ev = melt_ev + [-1]   # ice on a hot plate, butter in the sun: melting is implied
        ev.implied.append("meltwater" if L & {"ice", "ice_cube", "snow", "snowflake", "icicle"} else "melt")

    # ---------------- temperature and materials (thermotics) ----------------
    temp_state = None  # "heat_below", "boil", "melt", "freeze", "cool_above", "sublime"
    if sc.temps:
        tval = sc.temps[-1][0]
        ev.add("Thermal", 1.2, f"temperature {tval:g} deg C")
        down = bool(re.search(r"\b(drop|drops|dropped|dropping|fall|falls|falling|cool|cools|cooled|cooling|below|"
                              r"lower|lowers|lowered|decrease|decreases|chill|chilled|freez\w*)\b", sc.text))
        below = "below" in sc.text
        mat = None
        keys = [t.lemma for t in sc.toks] + [t.text for t in sc.toks] + \
            [p for t in sc.toks for p in reversed(t.lemma.split("_"))]
        for key in keys:
            if key in lex.materials:
                mat = key
                break
        if mat is not None:
            melt_c, boil_c, subl_c = lex.materials[mat]
            eff = tval - (3.0 if below else 0.0)
            if subl_c is not None and not down:
                temp_state = "sublime" if eff >= subl_c else "heat_below"
            elif down:
                temp_state = "freeze" if melt_c is not None and eff <= melt_c else "cool_above"
            elif boil_c is not None and eff >= boil_c and (melt_c is None or mat not in {"ice", "snow", "butter"}):
                temp_state = "boil"
            elif melt_c is not None and eff >= melt_c and mat in _SOLIDS_AT_ROOM:
                temp_state = "melt"
            else:
                temp_state = "heat_below"
        if temp_state == "boil":
            boil_ev = boil_ev + [-1]
        elif temp_state == "melt":
            melt_ev = melt_ev + [-1]
        elif temp_state == "freeze":
            freeze_ev = freeze_ev + [-1]
        elif temp_state == "sublime":
            subl = subl + [-1]

    # condensation: vapour meets a cold surface ("steam ... comes into contact with a cold window")
    vapour_here = bool(L & VAPOURS) or "water_vapor" in L or "water_vapour" in L
    cold_here = any(t.text in {"cold", "cool", "chilled", "icy", "freezing", "frosty"} for t in sc.live)
    contact_here = bool(L & {"contact", "touch", "meet", "hit", "land", "reach", "against", "onto", "cover", "form",
                             "bead", "collect", "gather", "settle"})
    condensation = bool(cond) or (vapour_here and cold_here and contact_here) or \
        ("sweat" in L and cold_here and bool(sc.words("container")))  # a cold glass 'sweating'
    if condensation:
        ev.add("Phase Change", 1.2, "condensation of vapour on a cold surface")
        ev.add("Thermal", 1.2, "cooling by the cold surface")
    if "frost" in L and L & {"form", "forming", "grow", "cover", "spread", "appear"} or "dew" in L and "form" in L:
        ev.add("Phase Change", 1.0, "frost/dew deposition")
        ev.add("Thermal", 0.6, "cooling")

    # ---------------- Phase Change / Thermal ----------------
    heat_cue = bool(L & HEAT_WORDS) or bool(heat_ev) or bool(sc.temps) or bool(sc.words("heat_source"))
    if melt_ev:
        ev.add("Phase Change", 1.2, "melting (solid to liquid)")
        if heat_cue:
            ev.add("Thermal", 1.0, "heating drives the melting")
        thaw = any(sc.toks[i].lemma in {"thaw", "defrost"} for i in melt_ev if i >= 0)
        if thaw:
            ev.add("Thermal", 0.8, "thawing (warming)")
    if freeze_ev:
        ev.add("Phase Change", 1.2, "freezing (liquid to solid)")
        ev.add("Thermal", 1.0, "cooling")
    if boil_ev:
        ev.add("Phase Change", 1.2, "boiling (liquid to vapour)")
        ev.add("Thermal", 1.2, "heating to the boiling point")
        ev.add("Fluid", 1.0, "boiling " + (liquids[0].replace("_", " ") if liquids else "liquid")
               + " (liquid flow)")  # boiling always involves a liquid (rules file)
    elif boil_attr:
        ev.add("Phase Change", 0.6, "boiling")
        ev.add("Thermal", 0.6, "heating")
    if evap:
        ev.add("Phase Change", 1.0, "evaporation (liquid to vapour)")
        if heat_cue:
            ev.add("Thermal", 0.6, "heating")
    if subl:
        ev.add("Phase Change", 1.2, "sublimation (solid to vapour)")
        if heat_cue:
            ev.add("Thermal", 0.6, "heating")
    smoulder = any(t.lemma == "smoke" and (t.text in {"smoking", "smoked", "smokes", "smoulders"} or
                                           sc.text_at(i - 1) == "to") for i, t in enumerate(sc.toks) if not t.neg) \
        and not L & {"cigarette", "cigar", "pipe", "chimney", "vape", "exhaust"}
    if burn_ev or smoulder or L & {"sparkler", "flame", "fire", "ember", "blaze", "combustion", "wildfire", "bonfire", "campfire", "inferno",
                       "firework", "fireball"}:
        what = "combustion (burning)"
        ev.add("Phase Change", 1.2, what)
        ev.add("Thermal", 1.2, "heat release by combustion")
    # dissolving a solid: sugar/salt into a liquid
    solubles = [sc.toks[i].lemma for i in sc.idx("soluble")
                if sc.lemma_at(i + 1) not in {"solution", "shaker", "water", "mixture", "syrup"}]
    if diss or (solubles and (liquids or modifier_liquids) and (flow or L & {"add", "drop", "put", "into", "stir",
                                                                             "pour", "mix", "disappear", "sprinkle"})):
        ev.add("Phase Change", 1.0, "dissolving a solid in a liquid")
        ev.add("Fluid", 0.4, "solution")
    # acid attacking organic matter (charring/dissolving)
    if sc.has("acid") and any(t.concepts & {"organic"} for t in sc.live if t.lemma not in {"lemon", "lemon_juice"}):
        acid_i = sc.idx("acid")
        if any(sc.toks[j].concepts & {"organic"} for a in acid_i for j in range(a + 1, len(sc.toks))):
            ev.add("Phase Change", 1.0, "acid chars/dissolves organic matter")

    # thermal words
    heat_src = sc.words("heat_source")
    for i in heat_ev:
        cooking = sc.toks[i].lemma in {"cook", "fry", "roast", "bake", "toast", "grill"}
        ev.add("Thermal", 1.2 if not cooking or heat_src else 0.3,
               "heating" + (f" ({heat_src[0].replace('_', ' ')})" if heat_src else ""))
    for i in cool_ev:
        if sc.toks[i].lemma != "freeze":
            ev.add("Thermal", 1.2, "cooling")
    temp_change: list[int] = []
    for i, t in enumerate(sc.toks):
        if t.neg:
            continue
        if t.text in {"hot", "warm", "cold", "cool", "chilly", "freezing", "icy", "warmer", "hotter", "colder", "cooler"}:
            prev = sc.text_at(i - 1)
            if prev in CHANGE_VERBS or prev in {"up", "down"} or (prev in {"much", "very", "so", "really"} and
                                                                      sc.text_at(i - 2) in CHANGE_VERBS):
                ev.add("Thermal", 1.2, f"temperature change ({t.text})")
                temp_change.append(i)
            nxt = sc.lemma_at(i + 1)
            if t.text in {"hot", "red"} and nxt in {"iron", "stove", "stovetop", "burner", "coil", "plate", "poker",
                                                  "griddle", "hot_plate", "metal", "skillet"} and len(sc.toks) > 0:
                if L & {"press", "touch", "sizzle", "glow", "melt", "burn", "iron", "scorch", "sear", "place", "put"}:
                    ev.add("Thermal", 1.0, f"hot {nxt} transfers heat")
    if any(t.lemma in {"hot_iron", "hot_pan", "hot_stove", "hot_plate"} for t in sc.live) and \
            L & {"press", "touch", "sizzle", "glow", "melt", "burn", "scorch", "sear", "place", "put", "over"}:
        ev.add("Thermal", 1.0, "hot appliance transfers heat")
    if L & {"glow"} and (L & {"hot", "red", "heat", "forge", "furnace", "coil", "ember", "iron", "stove", "metal",
                              "orange", "white"}):
        ev.add("Thermal", 1.0, "glowing hot")
    cold_src = sc.words("cold_source")
    if cold_src and L & {"put", "place", "chill", "cool", "leave", "store", "in", "inside", "into", "overnight",
                         "freeze", "sit", "pour", "dip", "plunge"}:
        ev.add("Thermal", 1.2, "cooling in " + cold_src[0].replace("_", " "))
        if L & {"freezer", "liquid_nitrogen"} and (liquids or modifier_liquids) and not freeze_ev and \
                not any(t.neg and t.concepts & {"v_freeze"} for t in sc.toks):
            freeze_ev = freeze_ev + [-1]     # a liquid left in a freezer freezes
            ev.add("Phase Change", 1.2, "freezing (liquid to solid)")
    hot_attr = any(t.text in {"hot", "warm", "boiling", "heated"} for t in sc.live)
    cold_attr = any(t.text in {"cold", "icy", "chilled", "iced", "freezing"} for t in sc.live)
    if hot_attr and cold_attr and (liquids or modifier_liquids or L & {"mix", "pour", "contact", "touch", "meet"}):
        ev.add("Thermal", 1.0, "heat flows from the hot to the cold body")

    thermal_only_liquid = bool((freeze_ev or sc.temps or condensation or heat_ev or cool_ev or temp_change or evap) and
                               not boil_ev and
                               not flow)

    ball_like_early = any(s.endswith("ball") or s in {"ball", "duck", "toy", "rubber_ball", "rubber_duck", "rubber_toy",
                                                      "beach_ball", "bouncy_ball"} for s in solids + softs)

    # ---------------- Fluid ----------------
    if liquids:
        w = 1.2
        if thermal_only_liquid:
            w = 0.0   # the liquid is only heated/cooled: Thermal (and Phase Change), not flow (rules file)
        ev.add("Fluid", w, "flow of " + ", ".join(dict.fromkeys(x.replace("_", " ") for x in liquids)))
    if modifier_liquids and not thermal_only_liquid:
        released = flow or (squeeze and squeezable_liquid) or (L & {"spill", "leak", "burst", "pop", "puncture"} and
                                                               not L & {"air", "gas", "helium"})
        w = 0.35 + (0.7 if released else 0.0)
        ev.add("Fluid", w, "flow of " + ", ".join(dict.fromkeys(x.replace("_", " ") for x in modifier_liquids)))
    flow_words = [sc.toks[i].lemma for i in flow if not (sc.toks[i].lemma == "dribble" and ball_like_early) and
                  not ((sc.subject_of(i) or Token("", "")).concepts & {"gas"} and
                       not (sc.subject_of(i) or Token("", "")).concepts & {"liquid"})]  # 'smoke pouring out'
    if flow_words and not condensation:
        strong = [w for w in flow_words if w not in {"spread", "fill", "shower", "mix", "merge", "combine",
                                                     "float", "bubble", "foam", "froth", "spray", "diffuse",
                                                     "disperse", "wet", "dissolve", "stream", "flood", "blot",
                                                     "sweeten", "paddle", "row", "surf", "swim", "ripple", "wave"}]
        if strong:
            ev.add("Fluid", 0.7, "flow: " + ", ".join(dict.fromkeys(strong)))
        elif L & {"swim", "surf", "paddle", "row", "ripple", "wade", "blot", "sweeten"}:
            ev.add("Fluid", 0.7, "flow: " + ", ".join(dict.fromkeys(flow_words)))
    if sc.words("granular") and (L & {"pour", "flow", "shovel", "funnel", "spill", "trickle", "cascade", "sift",
                                      "scoop", "stream", "slide", "avalanche", "hourglass", "fly", "flying", "spray",
                                      "scatter", "kick", "splash", "blow"}) or ("avalanche" in L and "snow" in L):
        ev.add("Fluid", 1.0, "granular flow (" + (sc.words("granular") or ["snow"])[0] + ")")
    if squeeze and L & {"lemon", "lime", "orange", "grapefruit", "fruit", "grape", "tomato", "sponge_"}:
        ev.add("Fluid", 1.0, "juice squeezed out")
    if "butter" in L and L & {"spread", "smear", "coat", "knife"} or "melt" in liquids:
        ev.add("Fluid", 1.0, "viscous/molten layer")
    if any(t.concepts & {"a_wet"} for t in sc.live) and not thermal_only_liquid:
        ev.add("Fluid", 0.6, "wet (liquid present)")
    if L & {"tear", "teardrop"} and any(sc.toks[i].lemma == "tear" and
                                        (sc.text_at(i - 1) in DETERMINERS or sc.text_at(i + 1) in {"from", "drop",
                                                                                                    "rolls", "runs"})
                                        for i in range(len(sc.toks))):
        ev.add("Fluid", 1.0, "tear drop")
    if any(sc.toks[i].lemma == "drop" and (sc.text_at(i + 1) == "of" or sc.text_at(i - 1) in DETERMINERS - {"of"}
                                           or sc.toks[i - 1].concepts & {"liquid", "water_body"} if i > 0 else False)
           for i in range(len(sc.toks)) if not sc.toks[i].neg):
        ev.add("Fluid", 1.0, "liquid drops")

    # ---------------- Compressible Flow ----------------
    aerosol = sc.words("aerosol_source")
    if not aerosol and "spray" in L and L & {"bottle", "can", "nozzle", "mister", "atomizer"}:
        aerosol = ["spray bottle"]
    if aerosol:
        ev.add("Compressible Flow", 1.2, "aerosol spray/mist (" + aerosol[0].replace("_", " ") + ")")
    if L & {"mist", "misting", "spritz", "atomize", "aerosol"} and not condensation:
        ev.add("Compressible Flow", 1.0, "mist")
    if "steam" in L or "steam_up" in L:
        ev.add("Compressible Flow", 1.2, "steam (vapour flow)")
    if L & {"smoke", "fume", "fumes", "exhaust", "smog", "plume", "puff", "gust", "draft", "breeze", "wind", "jet"}:
        g = [x for x in ("smoke", "fume", "fumes", "exhaust", "smog", "plume", "puff", "gust", "draft", "breeze", "wind",
                         "jet") if x in L]
        ev.add("Compressible Flow", 1.0, "gas flow (" + g[0] + ")")
    if "fog" in L and not condensation:
        ev.add("Compressible Flow", 1.0, "fog/vapour cloud")
    atoms = {t.lemma for t in sc.live}
    ev_verbs = {sc.toks[i].lemma for i in gasv + deform + squeeze + motion + flow} | \
        {t.lemma for t in sc.live if not t.concepts} | ({"pull_out"} if re.search(r"\b(pull|pulled|pulling|drawn|"
                                                                                 r"drawing|let|letting|sucked|"
                                                                                 r"sucking) out\b", sc.text) else set())
    if atoms & {"air", "gas", "helium", "carbon_dioxide", "co2", "hydrogen", "oxygen", "propane"}:
        if ev_verbs & {"extract", "remove", "pump", "inflate", "deflate", "hiss", "escape", "rush", "vacuum",
                       "compress", "blow", "blow_up", "leak", "suck", "release", "fill", "evacuate", "whoosh",
                       "vent", "pull_out", "burst", "pop", "squeeze", "exhale", "inhale"}:
            if not L & {"arc", "fly", "through"} or ev_verbs & {"extract", "pump", "inflate", "deflate", "hiss",
                                                                "vacuum"}:
                ev.add("Compressible Flow", 1.2, "air/gas moved or compressed")
        else:
            ev.add("Compressible Flow", 0.2, "air")
    if "vacuum" in L:
        ev.add("Compressible Flow", 1.0, "vacuum (gas extraction)")
    gas_events = {sc.toks[i].lemma for i in gasv + deform}
    if (gas_events & {"blow_up", "inflate", "deflate", "hiss"} or "pump" in L) and (elastics or softs) and \
            L & {"balloon", "water_balloon", "tire", "tyre", "car_tire", "air_mattress", "ball", "beach_ball", "raft",
                 "inflatable", "bubble_wrap", "air"}:
        ev.add("Compressible Flow", 1.0, "air inflating/deflating a body")
    carbon = sc.words("carbonated")
    if L & {"fizz", "effervesce", "effervescent", "froth", "carbonation", "carbonate", "carbonated", "fizzy"}:
        ev.add("Compressible Flow", 1.2, "gas bubbles (carbonation)")
    if carbon and L & {"bubble", "foam", "burst", "pop", "erupt", "explode", "shake", "spray", "overflow", "froth"}:
        ev.add("Compressible Flow", 1.2, "CO2 bubbles from " + carbon[0].replace("_", " "))
    if "bubble" in L and L & {"burst", "pop", "rise", "rising", "escape", "fizz"}:
        ev.add("Compressible Flow", 1.0, "gas bubbles")
    if "bubble_wrap" in L and L & {"pop", "burst", "squeeze", "press"}:
        ev.add("Compressible Flow", 1.0, "trapped air released")
    co2 = sc.words("co2_reactant")
    if co2 and (liquids or sc.has("acid") or modifier_liquids or L & {"soda", "coke", "cola", "vinegar"}):
        if len(set(co2) | {"acid"}) > 1 and not (co2 == ["dry_ice"] and not L & {"water", "fog", "smoke", "bubble"}):
            ev.add("Compressible Flow", 1.2, "CO2 released by " + co2[0].replace("_", " "))
    if "dust" in L and L & {"cloud", "billow", "beat", "puff", "blow", "kick", "swirl", "rise", "fly", "storm",
                            "dust_cloud", "shake"}:
        ev.add("Compressible Flow", 1.0, "airborne dust")
    if "dust_cloud" in L:
        ev.add("Compressible Flow", 1.0, "dust cloud")
    if L & {"explosion", "explode", "blast", "shockwave", "detonate"}:
        ev.add("Compressible Flow", 0.8, "blast wave")
    if L & {"hair_dryer", "blow_dry", "blow_dryer", "heat_gun"}:
        ev.add("Compressible Flow", 1.0, "hot air jet")
        ev.add("Thermal", 1.0, "hot air heats")
    if L & {"fan", "hair_dryer", "blower", "bellows", "leaf_blower"} and L & {"blow", "air", "gust", "direct", "breeze"}:
        ev.add("Compressible Flow", 1.0, "forced air")
    if "blow" in L and (L & {"candle", "out", "dandelion", "bubble", "whistle", "horn", "balloon", "dust", "leaf"} or
                        any(t.lemma == "blow" and sc.text_at(k + 1) in {"on", "into", "across", "onto", "over"}
                            for k, t in enumerate(sc.toks) if not t.neg)):
        ev.add("Compressible Flow", 0.8, "blown air")
    if "balloon" in L and "pop" in L:
        ev.add("Compressible Flow", 0.6, "air released")
    if "dry_ice" in L and L & {"fog", "smoke", "bubble", "water", "vapor", "cloud", "spill"}:
        ev.add("Compressible Flow", 1.0, "CO2 vapour from dry ice")
        ev.add("Phase Change", 1.0, "sublimation of dry ice")

    # ---------------- Elastic ----------------
    elastic_adj = [t.lemma for t in sc.live if t.concepts & {"a_elastic"} and t.lemma != "soft"]
    ball_like = ball_like_early
    soft_adj = any(t.lemma == "soft" and not sc.lemma_at(k + 1) in {"drink", "light", "glow", "music", "voice"}
                   for k, t in enumerate(sc.toks) if not t.neg)
    deform_words = [sc.toks[i].lemma for i in deform]
    squeeze_words = [sc.toks[i].lemma for i in squeeze]
    puncture = L & {"puncture", "pierce", "prick", "poke", "press", "stab", "tear", "penetrate", "sink", "dent", "pinch"}
    if elastics:
        ev.add("Elastic", 1.2, ", ".join(e.replace("_", " ") for e in elastics[:3]) + " deforms elastically")
    if fabrics:
        fab_def = [w for w in deform_words if w not in {"pop", "burst", "expand", "shrink", "contract", "bulge",
                                                       "puncture", "wave"}] + squeeze_words
        if "wave" in deform_words and not liquids:
            fab_def.append("wave")
        if fab_def or L & {"wind", "breeze", "gust", "tangle", "crumple", "crumpled", "drape", "hang", "hoist",
                           "sway", "flutter", "flap", "billow", "fold", "wring", "stretch", "iron", "twirl", "fly"}:
            ev.add("Elastic", 1.2, "flexible " + fabrics[0].replace("_", " ") + " deforms")
        else:
            ev.add("Elastic", 0.2, "flexible material")
    if softs:
        if squeeze_words or puncture or L & {"extract", "pump", "inflate", "deflate", "remove", "suck", "vacuum",
                                             "shrink", "leak", "collapse", "flatten",
                                             "squish", "deform", "stretch", "bend", "compress", "squeeze", "flex",
                                             "crumple", "pop", "burst", "blow_up", "bounce" if (elastic_adj or soft_adj)
                                             else "__"}:
            bounce_only = not (squeeze_words or elastic_adj or soft_adj or puncture or
                               L & {"extract", "pump", "inflate", "deflate", "remove", "suck", "vacuum", "shrink",
                                    "leak", "collapse", "flatten", "squish", "deform", "stretch", "bend", "compress",
                                    "squeeze", "flex", "crumple", "pop", "burst", "blow_up"})
            if not (ball_like and bounce_only):  # bouncing balls are Elastic only when softness is stated
                ev.add("Elastic", 1.2, "soft " + softs[0].replace("_", " ") + " deforms")
    if elastic_adj and (solids or softs or elastics or fabrics or ball_like):
        ev.add("Elastic", 1.0, "stated elasticity (" + elastic_adj[0] + ")")
    elif soft_adj and (solids or softs) and not liquids:
        ev.add("Elastic", 0.6, "soft body")
    strong_def = [w for w in deform_words if w in {"stretch", "bend", "flex", "squish", "compress", "deform",
                                                   "jiggle", "vibrate", "recoil", "snap_back", "spring_back",
                                                   "twang", "sag", "stretch_out", "pull_taut", "inflate", "deflate",
                                                   "crumple"}]
    illusion = any(t.lemma in {"appear", "look", "seem", "appears", "looks", "seems"} for t in sc.live) and \
        "bend" in strong_def and (liquids or L & {"water", "glass", "lens"})
    if illusion:
        ev.add("Optical", 1.2, "refraction makes it look bent")
        strong_def = [w for w in strong_def if w != "bend"]
    if strong_def and not (L & {"light", "beam", "ray"} and "bend" in strong_def):
        ev.add("Elastic", 0.8 if not (elastics or fabrics or softs) else 0.4, "deformation: " + strong_def[0])
    if "hair" in L and L & {"comb", "brush", "tangle", "blow", "wind", "flow", "wave", "sway", "curl", "braid",
                            "stretch", "pull", "hair_dryer"}:
        ev.add("Elastic", 1.2, "hair strands bend")
    if "paper" in L and L & {"fold", "crumple", "bend", "curl", "flutter", "flap", "crease", "roll"}:
        ev.add("Elastic", 1.2, "paper bends")

    # ---------------- Rigid Body ----------------
    soft_balls = {s for s in softs if s.endswith("ball") or s in {"rubber_duck", "rubber_toy", "tire", "tyre"}}

    def is_mover(t: Token | None) -> bool:
        if t is None or t.neg:
            return False
        if t.lemma in {"balloon", "kite", "hot_air_balloon", "leaf", "feather"} and L & FLIGHT:
            return True
        if t.concepts & NOT_MOVER and not t.concepts & {"vehicle"}:
            return False
        return bool(t.concepts & SOLID_MOVER) or t.lemma in soft_balls

    liquid_scene = bool(liquids or modifier_liquids)
    tools = set(sc.words("tool"))
    rigid_reason = None
    for i in motion:
        v = sc.toks[i].lemma
        subj, obj = sc.subject_of(i), sc.object_of(i)
        if obj is None and v in THROW_LIKE and (subj is None or subj.concepts & {"human", "body_part", "animal"}):
            obj = sc.unknown_object(i)   # 'a chef flips an omelette': an unlisted thing handled by hand is a solid
        cands = [t for t in (subj, obj) if is_mover(t)]
        if v in {"fall", "drop", "roll", "tumble", "topple", "tip", "tip_over", "flip", "bounce", "spin", "slide",
                 "float", "sink", "bob", "glide", "skid", "zigzag", "arc", "fly", "land", "drift", "rotate", "swing",
                 "dangle", "lean", "teeter", "wobble", "sail", "cruise", "hover", "slide_across", "roll_away",
                 "close", "shut", "traverse", "orbit", "plummet"} and subj is not None and not is_mover(subj) and \
                obj is None:
            continue  # "the liquid floats", "the temperature rises", "the point sinking"
        if not cands and subj is None and obj is None and v in {"fall", "drop", "roll", "slide", "tumble", "topple",
                                                                 "bounce", "spin", "flip", "tip_over", "skid", "roll_away",
                                                                 "slide_across"}:
            # no noun attached: accept a lone free solid of the sentence if nothing else could be moving
            pool = [t for t in sc.live if is_mover(t) and not t.concepts & {"tool"}]
            if pool and not liquids and not humans:
                cands = pool[:1]
        if not cands:
            continue
        mover = cands[0]
        if v in SPIN_LIKE and liquid_scene and all(t.concepts & {"tool", "container"} for t in cands):
            continue  # a spoon spinning in coffee, a bottle shaken with juice: the liquid moves
        if v in {"hoist", "raise", "lift"} and fabrics and all(t.concepts & {"tool"} for t in cands):
            continue
        if v == "dribble" and not ball_like:
            continue
        if v == "catch" and not any(m.lemma.endswith(PROJECTILE_TAIL) or m.lemma in PROJECTILES for m in cands):
            continue
        if v == "swing" and all(t.lemma in strike_tools for t in cands):
            continue
        if v in {"rise", "ascend", "soar"} and not (mover.concepts & {"vehicle"} or mover.lemma in {"balloon", "kite"} or
                                                    L & {"air", "sky", "upward", "upwards"}):
            continue  # 'bread rising', 'the tide rises': not a body's free flight
        rigid_reason = v
        ev.add("Rigid Body", 1.2, f"rigid-body motion ({v.replace('_', ' ')} of {mover.lemma.replace('_', ' ')})")
        break
    if not rigid_reason:
        for i in free_impact:
            v = sc.toks[i].lemma
            subj = sc.subject_of(i)
            if is_mover(subj) and subj.lemma not in strike_tools:
                ev.add("Rigid Body", 1.0, f"free body {v.replace('_', ' ')}")
                rigid_reason = v
                break
    if not rigid_reason and strike:
        hit_objs = {m for m in solids + list(soft_balls) if (m.endswith(PROJECTILE_TAIL) or m in PROJECTILES)
                    and m not in strike_tools}
        for i in strike:
            v = sc.toks[i].lemma
            after = {sc.text_at(j) for j in range(i + 1, min(len(sc.toks), i + 7))}
            if sc.text_at(i + 1) in {"off", "over", "down", "away"} and is_mover(sc.subject_of(i)) and \
                    sc.subject_of(i).lemma not in strike_tools:
                ev.add("Rigid Body", 1.0, f"{sc.subject_of(i).lemma.replace('_', ' ')} knocked {sc.text_at(i + 1)}")
                rigid_reason = v
                break
            obj = sc.object_of(i)
            if is_mover(obj) and obj.lemma not in strike_tools and \
                    {sc.text_at(j) for j in range(i + 1, min(len(sc.toks), i + 6))} & {"off", "over", "down", "away",
                                                                                        "flying", "across"}:
                ev.add("Rigid Body", 1.0, f"{obj.lemma.replace('_', ' ')} knocked away")
                rigid_reason = v
                break
            if hit_objs and (v in STRONG_STRIKE or after & DIRECTIONAL):
                if hit_objs - {"nail"} or after & {"into", "through"}:
                    ev.add("Rigid Body", 1.0, f"struck {sorted(hit_objs)[0].replace('_', ' ')} moves")
                    rigid_reason = v
                    break
    if L & {"domino", "jenga"}:
        ev.add("Rigid Body", 1.0, "toppling blocks")
        if L & {"topple", "fall", "knock", "tumble", "collapse"}:
            ev.add("Collision", 1.0, "blocks knock each other over")
    vehicles = [sc.toks[i].lemma for i in sc.idx("vehicle")
                if not (i + 1 < len(sc.toks) and sc.toks[i + 1].concepts & (NOUNS - {"vehicle"}))]  # 'car window'
    if vehicles and not rigid_reason and not L & {"park", "parked", "moor", "moored", "still", "rust", "rusting"}:
        if motion or L & {"through", "across", "along", "down", "over", "cut", "cut_through", "wheel", "ride"}:
            ev.add("Rigid Body", 1.2, f"vehicle motion ({vehicles[0].replace('_', ' ')})")
            rigid_reason = "vehicle"
    for s_ in ("surfer", "skateboarder", "skier", "snowboarder", "cyclist"):
        if s_ in L and L & {"ride", "sail", "glide", "roll", "grind", "slide", "surf", "speed", "zoom", "carve", "drop",
                            "jump", "flip"}:
            ev.add("Rigid Body", 1.0, f"{s_}'s board moves")
    if not rigid_reason and L & {"splash", "plop", "plunk"} and L & {"into", "onto"}:
        for i, t in enumerate(sc.toks):
            if t.lemma in {"splash", "plop", "plunk"} and is_mover(sc.subject_of(i)):
                ev.add("Rigid Body", 1.0, f"{sc.subject_of(i).lemma} falls into liquid")
                break

    # ---------------- Collision ----------------
    non_liquid_parts = bool(solids or surfaces or sc.words("body_part") or elastics or fabrics or softs)

    def target_is_fluid(i: int) -> bool:
        for j in range(i + 1, min(len(sc.toks), i + 8)):
            t = sc.toks[j]
            c = t.concepts
            nxt = sc.toks[j + 1] if j + 1 < len(sc.toks) else None
            if c & {"liquid", "water_body", "gas"}:
                if nxt is not None and nxt.concepts & (NOUNS - {"liquid", "water_body", "gas"}):
                    continue  # 'soda can', 'coffee beans': the liquid word only modifies the target
                return True
            if c & {"solid", "container", "tool", "surface", "body_part", "elastic_intrinsic", "fabric", "soft"}:
                return False
        return False

    def subject_is_fluid(i: int) -> bool:
        subj = sc.subject_of(i)
        return subj is not None and bool(subj.concepts & {"liquid", "water_body", "gas"}) and \
            not subj.concepts & {"solid", "container"}

    for i in strike + cut:
        v = sc.toks[i].lemma
        if not non_liquid_parts or target_is_fluid(i) or subject_is_fluid(i):
            continue
        w = 0.8 if v in {"block", "hook", "thread", "screw", "grip", "split", "obstruct"} else 1.2
        if v in {"press", "pinch", "squash", "crush", "grind", "mash"}:
            subj = sc.subject_of(i)
            agent_solid = (subj is not None and subj.concepts & {"tool", "solid", "container"}) or \
                L & {"under", "between"} or any(t.concepts & {"tool"} for t in sc.live)
            if not agent_solid and not L & {"into", "onto", "against", "foot", "feet", "boot", "shoe", "heel"}:
                continue  # a hand squeezing a soft object alone is not a collision (rules file)
        if v == "press" and not L & {"into", "against", "onto", "down", "over"} and not tools:
            continue
        ev.add("Collision", w, f"contact/impact ({v})")
        break
    for i in squeeze:
        subj = sc.subject_of(i)
        if sc.text_at(i - 1) in {"is", "are", "was", "were", "be", "being", "been", "gently", "slowly", "firmly"} and \
                sc.toks[i].text.endswith("ed"):
            continue  # passive: the subject is the squeezed body, not the presser
        if subj is not None and subj.concepts & {"solid", "tool"} and not subj.concepts & {"body_part", "human"} \
                and sc.toks[i].lemma in {"compress", "press", "squeeze", "crush", "squash"}:
            ev.add("Collision", 1.0, f"{subj.lemma.replace('_', ' ')} presses on the body")
            break
    for i in friction:
        v = sc.toks[i].lemma
        if not non_liquid_parts:
            break
        if v in {"slide", "slip", "skid", "drag", "slide_across", "swipe"}:
            subj = sc.subject_of(i)
            if subj is not None and subj.concepts & {"liquid", "water_body"} and not subj.concepts & {"solid"}:
                continue  # a droplet sliding down a window
            if target_is_fluid(i) or ("water" in L and L & {"water_slide", "slide"} and "slide" in
                                      [t.lemma for t in sc.toks if t.concepts & NOUNS]):
                continue
            if is_mover(subj) or is_mover(sc.object_of(i)) or surfaces or L & {"boot", "shoe", "tire", "sled"}:
                ev.add("Collision", 1.2, f"frictional contact ({v.replace('_', ' ')})")
                break
            continue
        if v in {"spread", "coat", "apply"} and not (tools or L & {"hand", "finger", "knife", "brush", "roller"}):
            continue
        if v == "brush" and liquid_scene and not L & {"across", "over", "against", "onto", "on"}:
            continue
        if v == "sand" and sc.toks[i].text == "sand":
            continue
        if v == "draw" and sc.lemma_at(i + 1) in {"water", "bath", "breath", "attention", "crowd", "line", "conclusion"}:
            continue
        ev.add("Collision", 1.2, f"frictional contact ({v.replace('_', ' ')})")
        break
    if L & {"contact"} and not condensation and (surfaces or solids) and (motion or free_impact or
                                                                         L & {"make", "makes", "strike", "hit"}):
        ev.add("Collision", 1.0, "contact with a surface")
    for i in motion:
        if sc.toks[i].lemma in {"topple", "push", "flip", "shove", "tip", "tip_over", "roll", "knock", "nudge",
                                "drag", "pull", "kick", "swat"}:
            subj, obj = sc.subject_of(i), sc.object_of(i)
            if is_mover(subj) and is_mover(obj) and subj is not obj:
                ev.add("Collision", 1.0, f"{subj.lemma.replace('_', ' ')} pushes {obj.lemma.replace('_', ' ')}")
                break
    if any(t.lemma == "paint" and (t.text in {"painting", "paints", "painted"} or sc.text_at(k - 1) == "to")
           for k, t in enumerate(sc.toks) if not t.neg) and (surfaces or tools):
        ev.add("Collision", 1.0, "paint applied by contact")
    if L & {"friction", "frictional"}:
        ev.add("Collision", 1.0, "frictional contact")
    if "comb" in L and L & {"hair", "fur", "wig", "through"}:
        ev.add("Collision", 1.2, "comb teeth drag through strands")
    for i in free_impact:
        v = sc.toks[i].lemma
        subj = sc.subject_of(i)
        if subject_is_fluid(i):
            continue
        if v == "bounce" and (liquid_scene and not surfaces or sc.text_at(i + 1) == "up"):
            continue  # 'bounces up and down' on a spring is an oscillation, not an impact
        if is_mover(subj) or surfaces or is_mover(sc.object_of(i)) or (subj is not None and subj.concepts &
                                                                        {"body_part"}):
            ev.add("Collision", 1.2, f"impact ({v.replace('_', ' ')})")
            break
    if "catch" in L and (ball_like or any(s.endswith(PROJECTILE_TAIL) or s in PROJECTILES for s in solids)):
        ev.add("Collision", 1.2, "catching a flying body (impact)")
    # a falling/thrown solid meeting a hard surface, or a moving solid pushed against another
    for i in motion:
        v = sc.toks[i].lemma
        if v in STATIC_MOTION or subject_is_fluid(i):
            continue
        for j in range(i + 1, min(len(sc.toks), i + 7)):
            if sc.toks[j].text in PUNCT or sc.toks[j].text in CLAUSE_WORDS:
                break
            prep = sc.toks[j].text
            if prep == "against" and v not in {"lean"}:
                ev.add("Collision", 1.0, f"{v.replace('_', ' ')} against a body (contact)")
                break
            if prep in {"onto", "on", "into", "upon", "at"} and v in {"fall", "drop", "throw", "toss", "hurl", "fling",
                                                                   "plummet", "tumble", "flick", "slam", "kick",
                                                                   "launch", "shoot", "topple", "crash", "tip_over",
                                                                   "tip", "dive"}:
                for t2 in sc.toks[j + 1: j + 6]:
                    if t2.concepts & {"liquid", "water_body", "container", "fabric"} or t2.lemma in {"pile", "basket",
                                                                                                 "air", "bed", "snow"}:
                        break
                    if t2.concepts & {"surface", "elastic_intrinsic", "soft"} or (t2.concepts & {"solid"} and
                                                                                  prep != "on"):
                        ev.add("Collision", 1.2, f"{v.replace('_', ' ')} onto {t2.lemma.replace('_', ' ')} (impact)")
                        break
                break
    if motion and tools and L & {"flip", "scoop", "toss", "turn"} and not liquid_scene and \
            [t for t in sc.live if is_mover(t) and not t.concepts & {"tool"}]:
        ev.add("Collision", 1.0, "tool contact")
    if L & {"insert", "slot", "plug", "twist_out", "pry"} and solids:
        ev.add("Collision", 1.0, "insertion contact")
    if "drum" in L and (strike_tools or strike or L & {"beating_stick", "drumstick", "stick", "play", "drummer"}):
        ev.add("Collision", 1.2, "stick strikes the drum")
    if ("mirror" in L) and (strike or L & {"against", "touch", "bump", "nudge", "tap", "hit"}):
        ev.add("Optical", 1.2, "mirror contact (reflection)")

    # ---------------- Optical ----------------
    ls = [w for w in sc.words("light_source") if w not in {"mirror", "star", "screen", "lightning", "prism", "lens",
                                                           "magnifying_glass", "rainbow"}]
    if ls:
        light_noun = [w for w in ls if w == "light"]
        if light_noun and all(t.lemma != "light" or (_attributive(sc, k) and sc.lemma_at(k + 1) not in
                                                     {"beam", "ray", "source", "show", "switch", "fixture", "wave",
                                                      "pulse", "bulb", "through", "from"})
                              for k, t in enumerate(sc.toks)) and len(ls) == 1:
            ls = []  # 'a light plastic ball': light as weight
    if ls:
        light_noun = [w for w in ls if w == "light"]
        if light_noun and not (lightv or L & {"turn_on", "turn_off", "switch_on", "switch_off", "shine", "beam", "ray",
                                              "dark", "flicker", "bright", "reflect", "refract", "through", "bulb"}):
            if any(sc.toks[i].lemma == "light" and (sc.text_at(i - 1) in {"the", "a", "of", "sun", "blue", "red",
                                                                          "green", "white", "bright", "warm",
                                                                          "colored", "coloured"})
                   for i in range(len(sc.toks)) if not sc.toks[i].neg):
                ev.add("Optical", 0.8, "light")
        else:
            ev.add("Optical", 1.2, "light source: " + ls[0].replace("_", " "))
    if L & {"prism", "rainbow", "lens", "magnifying_glass", "spectrum", "refraction", "reflection", "shadow",
            "lightning"}:
        ev.add("Optical", 1.2, "optics: " + next(iter(L & {"prism", "rainbow", "lens", "magnifying_glass", "spectrum",
                                                           "refraction", "reflection", "shadow", "lightning"})))
    if lightv:
        v = sc.toks[lightv[0]].lemma
        if v not in {"flash"} or L & {"light", "bulb", "camera", "lightning"}:
            ev.add("Optical", 1.2, f"emission of light ({v})")
    if reflect:
        ev.add("Optical", 1.2, "reflection/refraction of light")
    if L & {"flame", "fire", "firework", "burn"} and L & COLOUR_FLAME:
        ev.add("Optical", 1.2, "coloured flame emission")
    if "mirror" in L:
        ev.add("Optical", 0.2, "mirror")

    # ---------------- chemistry with no category (rules file: rusting/corrosion -> []) ----------------
    if L & {"rust", "rusting", "corrosion", "corrode", "oxidation", "oxidize", "oxidise", "tarnish", "patina"} and \
            not (melt_ev or boil_ev or burn_ev or motion or strike or cut):
        for c in CATEGORIES:
            ev.cap(c, 0.0)
        ev.why["Fluid"].append("rusting/corrosion is chemistry: no category")
    return ev, sc


_SOLIDS_AT_ROOM = {"ice", "snow", "frost", "glacier", "iceberg", "butter", "wax", "candle", "paraffin", "cheese",
                   "chocolate", "coconut_oil", "ice_cream", "popsicle", "gallium", "lead", "tin", "aluminum", "iron",
                   "steel", "copper", "gold", "silver", "glass", "salt", "sugar", "solder", "jelly", "gelatin"}


def describe(ev: Evidence, sc: Scene, labels: list[str]) -> str:
    """A short physics-oriented description: the objects, then one mechanism phrase per active category."""
    objs = []
    for t in sc.live:
        if t.concepts & {"liquid", "water_body", "solid", "container", "tool", "elastic_intrinsic", "fabric", "soft",
                         "gas", "granular", "soluble", "heat_source", "light_source", "aerosol_source", "carbonated",
                         "co2_reactant", "acid"} and not t.concepts & {"human", "body_part"}:
            name = t.lemma.replace("_", " ")
            if name not in objs and name not in {"piece", "chunk", "bit", "slab", "fragment", "shard", "block"}:
                objs.append(name)
    objs += [o for o in ev.implied if o not in objs]
    for i, t in enumerate(sc.toks[:-2]):
        if t.text in {"piece", "pieces", "block", "bar", "chunk", "lump", "slab", "sheet"} and sc.toks[i + 1].text == "of":
            nxt = next((t2 for t2 in sc.toks[i + 2: i + 5] if t2.concepts & NOUNS), sc.toks[i + 2])
            if nxt.text.isalpha() and nxt.lemma.replace("_", " ") not in objs and not nxt.neg:
                objs.insert(0, nxt.text)   # 'a piece of calcium': name the material even if the lexicon lacks it
    head = ", ".join(objs[:4]) if objs else "scene"
    head = head[0].upper() + head[1:]
    names = {"Rigid Body": "rigid-body motion", "Elastic": "elastic deformation", "Fluid": "liquid flow",
             "Compressible Flow": "compressible flow", "Phase Change": "phase change",
             "Collision": "contact/collision", "Thermal": "heat transfer", "Optical": "light"}
    order = ["Phase Change", "Fluid", "Compressible Flow", "Rigid Body", "Elastic", "Collision", "Thermal", "Optical"]
    parts = []
    for c in [c for c in order if c in labels]:
        if c == "Thermal" and "Phase Change" in labels:
            continue  # folded into the phase-change phrase
        why = ev.why[c][0] if ev.why[c] else names[c]
        key = names[c].split()[0].split("/")[0]
        phrase = why if key in why else f"{why} ({names[c]})"
        if c == "Phase Change" and "Thermal" in labels:
            tw = ev.why["Thermal"][0] if ev.why["Thermal"] else "heat transfer"
            phrase += f", {tw} (heat transfer)"
        parts.append(phrase)
    body = "; ".join(parts) if parts else "no salient physical process"
    notes = []
    if sc.figurative:
        notes.append("figurative, not physical: " + ", ".join(f"'{f.strip()}'" for f in sc.figurative[:3]))
    neg = [t.lemma.replace("_", " ") for t in sc.negated if t.concepts - {"human", "animal", "body_part", "surface"}]
    if neg:
        notes.append("negated: " + ", ".join(dict.fromkeys(neg)))
    out = f"{head}: {body}."
    if notes:
        out += " (" + "; ".join(notes) + ")"
    return out


def score_prompt(prompt: str) -> tuple[dict[str, float], str, Evidence]:
    ev, sc = analyse(prompt)
    conf = {c: round(conf_from_score(ev.score[c]), 4) for c in CATEGORIES}
    labels = [c for c in CATEGORIES if conf[c] >= THRESHOLD]
    return conf, describe(ev, sc, labels), ev


