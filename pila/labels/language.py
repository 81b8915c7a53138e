"""Is a prompt English? The default label parser reads English only; other languages get a clear message instead
of a silent empty label set (docs/labels.md). Language identification is py3langid's shipped model (offline,
~1 ms); a prompt is only called non-English when that model is confident AND few of its words are English words
the parser knows, so tag lists, slang and typos ("kettel boilin") stay English.
"""
from __future__ import annotations

import re
from functools import lru_cache

LANG_CONFIDENCE = 0.90    # py3langid normalised probability needed to call a prompt non-English
KNOWN_ENGLISH = 0.50      # ... unless at least this share of its words are English words the lexicon knows
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
_LATIN = re.compile(r"[a-z]", re.IGNORECASE)
NAMES = {"de": "German", "fr": "French", "es": "Spanish", "it": "Italian", "pt": "Portuguese", "nl": "Dutch",
         "ru": "Russian", "zh": "Chinese", "ja": "Japanese", "ko": "Korean", "pl": "Polish", "tr": "Turkish",
         "ar": "Arabic", "sv": "Swedish", "da": "Danish", "no": "Norwegian", "fi": "Finnish", "cs": "Czech",
         "uk": "Ukrainian", "el": "Greek", "hi": "Hindi", "vi": "Vietnamese", "id": "Indonesian", "he": "Hebrew"}


@lru_cache(maxsize=1)
def _identifier():
    try:
        import py3langid
    except ImportError:  # the check degrades to the script test below; the parser still works
        return None
    from py3langid.langid import LanguageIdentifier, MODEL_FILE
    from pathlib import Path
    return LanguageIdentifier.from_modelpath(Path(py3langid.__file__).parent / MODEL_FILE, norm_probs=True)


@lru_cache(maxsize=1)
def _english_words() -> frozenset[str]:
    from .classifier import STOP
    from .rules import lexicon
    lex = lexicon()
    return frozenset(lex.vocab | lex.common | STOP | set(lex.forms))


def detect(prompt: str) -> tuple[str, float]:
    """(ISO 639-1 code, confidence) of the prompt's language; ("en", 1.0) for English or an empty prompt."""
    words = _WORD.findall(prompt.lower())
    if not words:
        return "en", 1.0
    letters = "".join(words)
    latin = len(_LATIN.findall(letters)) / len(letters)
    known = sum(w in _english_words() for w in words) / len(words)
    ident = _identifier()
    if ident is None:
        return ("en", 1.0) if latin >= 0.5 else ("und", 1.0 - latin)
    lang, p = ident.classify(prompt)
    if lang == "en" or known >= KNOWN_ENGLISH:
        return "en", max(known, p if lang == "en" else 0.0)
    if latin < 0.5 or p >= LANG_CONFIDENCE or (known < 0.2 and p >= 0.6):  # short phrases: weaker evidence
        return lang, float(p)
    return "en", 1.0 - float(p)


def language_name(code: str) -> str:
    return NAMES.get(code, code)
