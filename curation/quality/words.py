"""English words and sentences the way datatrove 0.10.1 counts them, without spaCy.

datatrove's quality filters count *words* with ``split_into_words(text, "eng")``, which is spaCy's
rule-based ``spacy.blank("en")`` tokenizer (no statistical model and no download: the rules ship
inside spaCy), and count C4's *sentences* with spaCy's rule-based ``sentencizer`` on top of it.
Word counts, mean word length, the alphabetic-word ratio and the n-gram fractions all depend on how
punctuation and contractions are split off (``"Don't!"`` is three tokens: ``Do``, ``n't``, ``!``), so
parity needs the same segmentation. This module re-implements that segmentation in plain Python
from spaCy's documented algorithm (https://spacy.io/usage/linguistic-features#how-tokenizer-works)
and its English rule data (spaCy is MIT-licensed; the rule *data* below — affix characters,
contraction families, abbreviations, emoticons — is restated from it, the code is ours):

1. split on whitespace (``str.isspace``); whitespace tokens are dropped, as datatrove strips them;
2. per chunk: a special case (``"can't"`` -> ``ca n't``; ``"Mr."`` stays whole) wins outright; else
   prefixes (``( " $``) and suffixes (``, . ! 's km``) come off one at a time, stopping as soon as
   the remainder is a special case; the core stays whole when it looks like a URL, else it is split
   on infixes (hyphens between letters, ``,`` between letters, ``...``);
3. special cases that the affix rules cut apart (``:)`` in ``"nice:)"``) are merged back.

The character classes equal spaCy's code point by code point, and the segmentation matched
spaCy 3.8 on every document of ``benchmarks.quality_parity`` and on tens of thousands of random
strings. Two places may differ, both far from real text: chunks longer than :data:`LONG_CHUNK`
characters (base64 blobs, a 5 MB line without spaces) skip the affix loop, whose cost grows with
the square of the chunk length (in spaCy too), and are split on infixes only; and spaCy's merge
step (3) runs over the whole text, so a special case spanning a space (": )") can, in principle,
block a merge inside the next chunk.

Chunks are cached (a web corpus repeats its words), so a document costs one dict lookup per
whitespace-separated chunk.
"""

from __future__ import annotations

import re
import unicodedata

LONG_CHUNK = 10_000
_CACHE_LIMIT = 300_000

# --- character classes ----------------------------------------------------------------------------
# Letters spaCy's affix rules know about: Latin (with its extensions), Cyrillic and Greek letters
# used by the languages spaCy ships, and scripts without case.
_LATIN = ("A-Za-z\uFF21-\uFF3A\uFF41-\uFF5A\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u00FF\u0100-\u017F"
          "\u0180-\u01BF\u01C4-\u024F\u2C60-\u2C7B\u2C7E\u2C7F\uA722-\uA76F\uA771-\uA787\uA78B-\uA78E"
          "\uA790-\uA7B9\uA7FA\uAB30-\uAB5A\uAB60-\uAB64\u0250-\u02AF\u1D00-\u1D25\u1D6B-\u1D77"
          "\u1D79-\u1D9A\u1E00-\u1EFF")
_OTHER_LOWER = "ёа-яәөүҗңһα-ωάέίόώήύа-щюяіїєґѓѕјљњќѐѝ"
_OTHER_UPPER = "ЁА-ЯӘӨҮҖҢҺΑ-ΩΆΈΊΌΏΉΎА-ЩЮЯІЇЄҐЃЅЈЉЊЌЀЍ"
_UNCASED = ("\u1200-\u137F\u0980-\u09FF\u0591-\u05F4\uFB1D-\uFB4F\u0620-\u064A\u066E-\u06D5"
            "\u06E5-\u06FF\u0750-\u077F\u08A0-\u08BD\uFB50-\uFBB1\uFBD3-\uFD3D\uFD50-\uFDC7"
            "\uFDF0-\uFDFB\uFE70-\uFEFC\U0001EE00-\U0001EEBB\u0D80-\u0DFF\u0900-\u097F\u0C80-\u0CFF"
            "\u0B80-\u0BFF\u0C00-\u0C7F\uAC00-\uD7AF\u1100-\u11FF\u3040-\u309F\u30A0-\u30FF"
            "\u4E00-\u9FFF\u3400-\u4DBF\U00020000-\U0002A6DF\U0002A700-\U0002EBEF\u2E80-\u2EFF\u2F00-\u2FDF\u2FF0-\u2FFF"
            "\u3000-\u303F\u31C0-\u31EF\u3200-\u33FF\uF900-\uFAFF\uFE30-\uFE4F\U0001F200-\U0001F2FF"
            "\U0002F800-\U0002FA1F")


def _expand(ranges: str) -> list[str]:
    chars, i = [], 0
    while i < len(ranges):
        if i + 2 < len(ranges) and ranges[i + 1] == "-":
            chars += [chr(c) for c in range(ord(ranges[i]), ord(ranges[i + 2]) + 1)]
            i += 3
        else:
            chars.append(ranges[i])
            i += 1
    return chars


def _char_class(chars) -> str:
    return "".join(re.escape(c) for c in sorted(set(chars)))


_latin_chars = _expand(_LATIN)
# Latin letters are split by case as Unicode does, except that the phonetic letters all count as
# lower case (the glottal stop included); the few Latin letters of neither case (e.g. the titlecase
# digraphs) are letters of neither case, as in spaCy.
_PHONETIC = "\u0250-\u02AF\u1D00-\u1D25\u1D6B-\u1D77\u1D79-\u1D9A\uAB30-\uAB5A\uAB60-\uAB64"
_LOWER = _char_class([c for c in _latin_chars if c.islower()] + _expand(_OTHER_LOWER + _PHONETIC)) + _UNCASED
_UPPER = _char_class([c for c in _latin_chars if c.isupper()] + _expand(_OTHER_UPPER)) + _UNCASED
_ALPHA = _char_class(_latin_chars + _expand(_OTHER_LOWER + _OTHER_UPPER)) + _UNCASED

# Symbols (Unicode "So": dingbats, arrows, box drawing, emoji) are split off everywhere.
_ICONS = ("\u00A6\u00A9\u00AE\u00B0\u0482\u058D\u058E\u060E\u060F\u06DE\u06E9\u06FD\u06FE\u07F6"
          "\u09FA\u0B70\u0BF3-\u0BF8\u0BFA\u0C7F\u0D4F\u0D79\u0F01-\u0F03\u0F13\u0F15-\u0F17"
          "\u0F1A-\u0F1F\u0F34\u0F36\u0F38\u0FBE-\u0FC5\u0FC7-\u0FCC\u0FCE\u0FCF\u0FD5-\u0FD8\u109E"
          "\u109F\u1390-\u1399\u1940\u19DE-\u19FF\u1B61-\u1B6A\u1B74-\u1B7C\u2100\u2101\u2103-\u2106"
          "\u2108\u2109\u2114\u2116\u2117\u211E-\u2123\u2125\u2127\u2129\u212E\u213A\u213B\u214A"
          "\u214C\u214D\u214F\u218A\u218B\u2195-\u2199\u219C-\u219F\u21A1\u21A2\u21A4\u21A5"
          "\u21A7-\u21AD\u21AF-\u21CD\u21D0\u21D1\u21D3\u21D5-\u21F3\u2300-\u2307\u230C-\u231F"
          "\u2322-\u2328\u232B-\u237B\u237D-\u239A\u23B4-\u23DB\u23E2-\u2426\u2440-\u244A"
          "\u249C-\u24E9\u2500-\u25B6\u25B8-\u25C0\u25C2-\u25F7\u2600-\u266E\u2670-\u2767"
          "\u2794-\u27BF\u2800-\u28FF\u2B00-\u2B2F\u2B45\u2B46\u2B4D-\u2B73\u2B76-\u2B95"
          "\u2B98-\u2BC8\u2BCA-\u2BFE\u2CE5-\u2CEA\u2E80-\u2E99\u2E9B-\u2EF3\u2F00-\u2FD5"
          "\u2FF0-\u2FFB\u3004\u3012\u3013\u3020\u3036\u3037\u303E\u303F\u3190\u3191\u3196-\u319F"
          "\u31C0-\u31E3\u3200-\u321E\u322A-\u3247\u3250\u3260-\u327F\u328A-\u32B0\u32C0-\u32FE"
          "\u3300-\u33FF\u4DC0-\u4DFF\uA490-\uA4C6\uA828-\uA82B\uA836\uA837\uA839\uAA77-\uAA79"
          "\uFDFD\uFFE4\uFFE8\uFFED\uFFEE\uFFFC\uFFFD\U00010137-\U0001013F\U00010179-\U00010189"
          "\U0001018C-\U0001018E\U00010190-\U0001019B\U000101A0\U000101D0-\U000101FC\U00010877"
          "\U00010878\U00010AC8\U0001173F\U00016B3C-\U00016B3F\U00016B45\U0001BC9C"
          "\U0001D000-\U0001D0F5\U0001D100-\U0001D126\U0001D129-\U0001D164\U0001D16A-\U0001D16C"
          "\U0001D183\U0001D184\U0001D18C-\U0001D1A9\U0001D1AE-\U0001D1E8\U0001D200-\U0001D241"
          "\U0001D245\U0001D300-\U0001D356\U0001D800-\U0001D9FF\U0001DA37-\U0001DA3A"
          "\U0001DA6D-\U0001DA74\U0001DA76-\U0001DA83\U0001DA85\U0001DA86\U0001ECAC"
          "\U0001F000-\U0001F02B\U0001F030-\U0001F093\U0001F0A0-\U0001F0AE\U0001F0B1-\U0001F0BF"
          "\U0001F0C1-\U0001F0CF\U0001F0D1-\U0001F0F5\U0001F110-\U0001F16B\U0001F170-\U0001F1AC"
          "\U0001F1E6-\U0001F202\U0001F210-\U0001F23B\U0001F240-\U0001F248\U0001F250\U0001F251"
          "\U0001F260-\U0001F265\U0001F300-\U0001F3FA\U0001F400-\U0001F6D4\U0001F6E0-\U0001F6EC"
          "\U0001F6F0-\U0001F6F9\U0001F700-\U0001F773\U0001F780-\U0001F7D8\U0001F800-\U0001F80B"
          "\U0001F810-\U0001F847\U0001F850-\U0001F859\U0001F860-\U0001F887\U0001F890-\U0001F8AD"
          "\U0001F900-\U0001F90B\U0001F910-\U0001F93E\U0001F940-\U0001F970\U0001F973-\U0001F976"
          "\U0001F97A\U0001F97C-\U0001F9A2\U0001F9B0-\U0001F9B9\U0001F9C0-\U0001F9C2"
          "\U0001F9D0-\U0001F9FF\U0001FA60-\U0001FA6D")

_PUNCT = ["…", "……", ",", ":", ";", "!", "?", "¿", "؟", "¡", "(", ")", "[", "]", "{", "}", "<", ">",
          "_", "#", "*", "&", "。", "？", "！", "，", "、", "；", "：", "～", "·", "।", "،", "۔", "؛", "٪"]
_QUOTES = ["'", '"', "”", "“", "`", "‘", "´", "’", "‚", ",", "„", "»", "«", "「", "」", "『", "』",
           "（", "）", "〔", "〕", "【", "】", "《", "》", "〈", "〉", "\u2329", "\u232a", "⟦", "⟧"]
_CURRENCY = ["$", "£", "€", "¥", "฿", "US$", "C$", "A$", "₽", "﷼", "₴"] + [chr(c) for c in range(0x20A0, 0x20C0)]
_UNITS = ("km km² km³ m m² m³ dm dm² dm³ cm cm² cm³ mm mm² mm³ ha µm nm yd in ft kg g mg µg t lb oz "
          "m/s km/h kmh mph hPa Pa mbar mb MB kb KB gb GB tb TB T G M K % км км² км³ м м² м³ дм дм² "
          "дм³ см см² см³ мм мм² мм³ нм кг г мг м/с км/ч кПа Па мбар Кб КБ кб Мб МБ мб Гб ГБ гб Тб ТБ "
          "тбكم كم² كم³ م م² م³ سم سم² سم³ مم مم² مم³ كم غرام جرام جم كغ ملغ كوب اكواب").split()
_HYPHENS = ["-", "–", "—", "--", "---", "——", "~"]
_ELLIPSES = [r"\.\.+", "…"]


def _alternatives(items) -> list[str]:
    return [re.escape(i) for i in items]


_ESC = lambda items: "".join(re.escape(c) for c in items)  # noqa: E731
_QUOTE_CHARS = _ESC(_QUOTES)
_ICON = f"[{_ICONS}]"

# Affixes, in spaCy's order: the first prefix that matches at the start wins; the suffix is the
# leftmost match that reaches the end.
_PREFIXES = (_alternatives(["§", "%", "=", "—", "–"]) + [r"\+(?![0-9])"] + _alternatives(_PUNCT)
             + _ELLIPSES + _alternatives(_QUOTES) + _alternatives(_CURRENCY) + [_ICON])
# The lookbehind class before a suffix "." spells spaCy's class as written, which also holds "|" and
# the characters of "(?:" and ")" (they appear in its character class literally).
_DOT_AFTER = f"0-9{_LOWER}%²\\-+{_ESC(''.join(_PUNCT))}|(?:){_QUOTE_CHARS}"
_SUFFIXES = (_alternatives(_PUNCT) + _ELLIPSES + _alternatives(_QUOTES) + [_ICON]
             + _alternatives(["'s", "'S", "’s", "’S", "—", "–"])
             + [r"(?<=[0-9])\+", r"(?<=°[FfCcKk])\.",
                "(?<=[0-9])(?:{})".format("|".join(_alternatives(_CURRENCY))),
                "(?<=[0-9])(?:{})".format("|".join(_alternatives(_UNITS))),
                f"(?<=[{_DOT_AFTER}])\\.", f"(?<=[{_UPPER}][{_UPPER}])\\."])
_INFIXES = (_ELLIPSES + [_ICON, r"(?<=[0-9])[+\-\*^](?=[0-9-])",
                         f"(?<=[{_LOWER}{_QUOTE_CHARS}])\\.(?=[{_UPPER}{_QUOTE_CHARS}])",
                         f"(?<=[{_ALPHA}]),(?=[{_ALPHA}])",
                         "(?<=[{a}0-9])(?:{h})(?=[{a}])".format(a=_ALPHA, h="|".join(_alternatives(_HYPHENS))),
                         f"(?<=[{_ALPHA}0-9])[:<>=/](?=[{_ALPHA}])"])

_prefix_match = re.compile("|".join(_PREFIXES)).match
_suffix_search = re.compile("|".join(p + "$" for p in _SUFFIXES)).search
_infix_finditer = re.compile("|".join(_INFIXES)).finditer
_SUFFIX_WINDOW = 32


def _suffix_length(s: str, start: int) -> int:
    """Length of the suffix of ``s[start:]``: its leftmost suffix-rule match that reaches the end.

    Searching the whole remainder costs a pass over it per call, which makes stripping a long run of
    ")" quadratic twice over, so the last few characters are searched first. A match found there
    after the window's first position is the leftmost one overall: a match starting further left would
    be longer than the window, which only a run of dots can be, and then the window (all dots) matches
    at its first position, where the full search takes over. The window starts far enough from
    ``start`` that the lookbehinds (2 characters at most) see only characters of ``s[start:]``."""
    q = len(s) - _SUFFIX_WINDOW
    if q - start > 4:
        m = _suffix_search(s, q)  # lookbehinds read the real characters before q
        if m is None:
            return 0
        if m.start() > q:
            return m.end() - m.start()
    m = _suffix_search(s[start:])
    return (m.end() - m.start()) if m else 0


# URLs and e-mail addresses stay one token (the dperini URL pattern, as spaCy adapts it: optional
# scheme, optional user info, a public IPv4 address or host names ending in a lower-case TLD).
_HOST_CHAR = "A-Za-z0-9\u00a1-\uffff"
_URL_TAIL = (
    r"(?:"
    r"(?!(?:10|127)(?:\.\d{1,3}){3})(?!(?:169\.254|192\.168)(?:\.\d{1,3}){2})"
    r"(?!172\.(?:1[6-9]|2\d|3[0-1])(?:\.\d{1,3}){2})"
    r"(?:[1-9]\d?|1\d\d|2[01]\d|22[0-3])(?:\.(?:1?\d{1,2}|2[0-4]\d|25[0-5])){2}"
    r"(?:\.(?:[1-9]\d?|1\d\d|2[0-4]\d|25[0-4]))"
    f"|(?:(?:[{_HOST_CHAR}][{_HOST_CHAR}_-]{{0,62}})?[{_HOST_CHAR}]\\.)+(?:[{_LOWER}]{{2,63}})"
    r")(?::\d{2,5})?(?:[/?#]\S*)?$")
_SCHEME = r"(?:(?:[\w\+\-\.]{2,})://)?"
_url_match = re.compile(_SCHEME + _URL_TAIL).match
# Only tried when the chunk has an "@": the optional user-info group backtracks quadratically on
# long chunks full of ":" otherwise, and without an "@" it can never match anyway.
_url_with_user_match = re.compile(_SCHEME + r"(?:\S+(?::\S*)?@)?" + _URL_TAIL).match


def _is_url(s: str) -> bool:
    return bool((_url_with_user_match if "@" in s else _url_match)(s))


# --- special cases (tokenizer exceptions) --------------------------------------------------------
_EMOTICONS = r"""
:) :-) :)) :-)) :))) :-))) (: (-: =) (= :] :-] [: [-: [= =] :o) (o: :} :-} 8) 8-) (-8 ;) ;-) (; (-;
:( :-( :(( :-(( :((( :-((( ): )-: =( >:( :') :'-) :'( :'-( :/ :-/ =/ =| :| :-| ]= =[ :1 :P :-P :p
:-p :O :-O :o :-o :0 :-0 :() >:o :* :-* :3 :-3 =3 :> :-> :X :-X :x :-x :D :-D ;D ;-D =D xD XD xDD
XDD 8D 8-D ^_^ ^__^ ^___^ >.< >.> <.< ._. ;_; -_- -__- v.v V.V v_v V_V o_o o_O O_o O_O 0_o o_0 0_0
o.O O.o O.O o.o 0.0 o.0 0.o @_@ <3 <33 <333 </3 (^_^) (-_-) (._.) (>_<) (*_*) (¬_¬) ಠ_ಠ ಠ︵ಠ (ಠ_ಠ)
¯\(ツ)/¯ (╯°□°）╯︵┻━┻ ><(((*>""".split()

_ABBREVIATIONS = """
a. b. c. d. e. f. g. h. i. j. k. l. m. n. o. p. q. r. s. t. u. v. w. x. y. z. ä. ö. ü. ' \\") <space>
'' C++ 'd a.m. Adm. Bros. co. Co. Corp. D.C. Dr. e.g. E.g. E.G. Gen. Gov. i.e. I.e. I.E. Inc. Jr. Ltd.
Md. Messrs. Mo. Mont. Mr. Mrs. Ms. p.m. Ph.D. Prof. Rep. Rev. Sen. St. vs. v.s. 'S 's \u2018S \u2018s
and/or w/o 're 'Cause 'cause 'cos 'Cos 'coz 'Coz 'cuz 'Cuz 'bout ma'am Ma'am o'clock O'clock lovin'
Lovin' lovin Lovin havin' Havin' havin Havin doin' Doin' doin Doin goin' Goin' goin Goin Mt. Ak. Ala.
Apr. Ariz. Ark. Aug. Calif. Colo. Conn. Dec. Del. Feb. Fla. Ga. Ia. Id. Ill. Ind. Jan. Jul. Jun. Kan.
Kans. Ky. La. Mar. Mass. Mich. Minn. Miss. N.C. N.D. N.H. N.J. N.M. N.Y. Neb. Nebr. Nev. Nov. Oct.
Okla. Ore. Pa. S.C. Sep. Sept. Tenn. Va. Wash. Wis. nothin nothin' nuthin nuthin' ol ol' somethin
somethin' Nothin Nothin' Nuthin Nuthin' Ol Ol' Somethin Somethin' em 'em ll 'll nuff 'nuff""".split()


def _english_special_cases() -> dict[str, tuple[str, ...]]:
    """Chunks that tokenize to fixed pieces: contractions, abbreviations, clock times, emoticons."""
    rules: dict[str, tuple[str, ...]] = {}

    def both_cases(word: str) -> tuple[str, str]:
        return word, word.title()

    def add(*pieces: str) -> None:
        rules["".join(pieces)] = pieces

    def contractions(word: str, endings: list[tuple[str, ...]]) -> None:
        # every ending comes with and without its apostrophe: "you'll"/"youll", "you'd've"/"youdve"
        for form in both_cases(word):
            for ending in endings:
                add(form, *ending)
                add(form, *(p.replace("'", "") for p in ending))

    for form in both_cases("i"):
        add(form, "'m"), add(form, "m"), add(form, "'m", "a"), add(form, "m", "a")
    will_would = [("'ll",), ("'ll", "'ve"), ("'d",), ("'d", "'ve")]
    for pron in ("i", "you", "he", "she", "it", "we", "they"):
        contractions(pron, will_would)
    for pron in ("i", "you", "we", "they"):
        contractions(pron, [("'ve",)])
    for pron in ("you", "we", "they"):
        contractions(pron, [("'re",)])
    for pron in ("he", "she", "it"):
        contractions(pron, [("'s",)])
    for word in ("who", "what", "when", "where", "why", "how", "there", "that", "this", "these", "those"):
        plural, singular = word in ("these", "those"), word in ("that", "this")
        contractions(word, will_would + ([] if plural else [("'s",)])
                     + ([] if singular else [("'re",), ("'ve",)]))
    for verb in ("ca", "could", "do", "does", "did", "had", "may", "might", "must", "need", "ought",
                 "sha", "should", "wo", "would"):
        contractions(verb, [("n't",), ("n't", "'ve")])
    for verb in ("could", "might", "must", "should", "would"):
        contractions(verb, [("'ve",)])
    for verb in ("ai", "are", "is", "was", "were", "have", "has", "dare"):
        contractions(verb, [("n't",)])
    for hour in range(1, 13):
        for period in ("a.m.", "am", "p.m.", "pm"):
            add(str(hour), period)
    for first, second in (("y'", "all"), ("y", "all"), ("not", "'ve"), ("not", "ve"), ("Not", "'ve"),
                          ("Not", "ve"), ("can", "not"), ("Can", "not"), ("gon", "na"), ("Gon", "na"),
                          ("got", "ta"), ("Got", "ta"), ("let", "'s"), ("Let", "'s"), ("c'm", "on"),
                          ("C'm", "on")):
        add(first, second)
    add("how", "'d", "'y"), add("How", "'d", "'y")
    for word in _ABBREVIATIONS + _EMOTICONS:
        rules[word] = (word,)
    for chunk in ("\u2014", "\\t", "\\n"):
        rules[chunk] = (chunk,)
    for unit in "cfkCFK":
        add("°", unit, ".")
    for chunk in ("Ill", "ill", "Its", "its", "Hell", "hell", "Shell", "shell", "Shed", "shed", "were",
                  "Were", "Well", "well", "Whore", "whore"):  # ordinary words, not contractions
        rules.pop(chunk, None)
    # every rule with a straight apostrophe also exists with a typographic one
    for chunk, pieces in list(rules.items()):
        if "'" in chunk:
            rules[chunk.replace("'", "’")] = tuple(p.replace("'", "’") for p in pieces)
    return rules


# --- the tokenizer --------------------------------------------------------------------------------
# spaCy's sentencizer ends a sentence after one of these tokens (once a non-punctuation token follows).
SENTENCE_END_TOKENS = frozenset(
    "!.?։؟۔܀܁܂߹।॥၊။።፧፨᙮᜵᜶᠃᠉᥄᥅᪨᪩᪪᪫᭚᭛᭞᭟᰻᰼᱾᱿‼‽⁇⁈⁉⸮⸼꓿꘎꘏꛳꛷꡶꡷꣎꣏꤯꧈꧉꩝꩞꩟꫰꫱꯫﹒﹖﹗！．？"
    "\U00010A56\U00010A57\U00011047\U00011048\U000110BE\U000110BF\U000110C0\U000110C1\U00011141"
    "\U00011142\U00011143\U000111C5\U000111C6\U000111CD\U000111DE\U000111DF\U00011238\U00011239"
    "\U0001123B\U0001123C\U000112A9\U0001144B\U0001144C\U000115C2\U000115C3\U000115C9\U000115CA"
    "\U000115CB\U000115CC\U000115CD\U000115CE\U000115CF\U000115D0\U000115D1\U000115D2\U000115D3"
    "\U000115D4\U000115D5\U000115D6\U000115D7\U00011641\U00011642\U0001173C\U0001173D\U0001173E"
    "\U00011A42\U00011A43\U00011A9B\U00011A9C\U00011C41\U00011C42\U00016A6E\U00016A6F\U00016AF5"
    "\U00016B37\U00016B38\U00016B44\U0001BC9F\U0001DA88｡。")


def _is_punct(token: str) -> bool:
    """spaCy's ``is_punct``: every character is Unicode punctuation (category P*)."""
    return all(unicodedata.category(c)[0] == "P" for c in token)


class Chunk:
    """What the quality filters need to know about one whitespace-separated chunk: its tokens, and
    (computed on first use) how it moves spaCy's sentence-boundary state machine."""

    __slots__ = ("tokens", "_sentences")

    def __init__(self, tokens: tuple[str, ...]):
        self.tokens = tokens
        self._sentences: tuple[tuple[int, bool], tuple[int, bool]] | None = None

    def sentences(self, seen: bool) -> tuple[int, bool]:
        """(sentences started inside the chunk, state after it) given the state before it; the state
        ``seen`` means a sentence-final token went by and no word has followed yet."""
        if self._sentences is None:
            self._sentences = (_sentence_transition(self.tokens, False), _sentence_transition(self.tokens, True))
        return self._sentences[seen]


class EnglishWords:
    """spaCy-compatible English word segmentation with a per-process chunk cache."""

    def __init__(self):
        self.special = _english_special_cases()
        self._cache: dict[str, Chunk] = {}
        # Special cases that the affix rules would cut apart, keyed by those pieces, so they can be
        # merged back when they appear inside a longer chunk ("nice:)" -> "nice", ":)").
        self._merge: dict[tuple[str, ...], str] = {}
        for key in sorted(self.special):
            if " " in key or not key.strip():
                continue
            pieces = tuple(self._split(key, specials=False))
            if len(pieces) > 1:
                self._merge.setdefault(pieces, key)
        self._merge_max = max((len(p) for p in self._merge), default=0)
        self._merge_heads = frozenset(p[:2] for p in self._merge)
        # Chunks too long for the cache, remembered briefly: the next op usually asks for the same one.
        self._long: dict[str, Chunk] = {}

    # -- segmentation --
    def _split(self, chunk: str, specials: bool = True) -> list[str]:
        special = self.special if specials else {}
        if chunk in special:
            return list(special[chunk])
        if len(chunk) > LONG_CHUNK:
            return self._infix_split(chunk)
        prefixes: list[str] = []
        suffixes: list[str] = []
        s = chunk
        last = -1
        while s and len(s) != last:
            if s in special:
                break
            last = len(s)
            m = _prefix_match(s)
            pre = m.end() if m else 0
            if pre:
                rest = s[pre:]
                if rest and rest in special:
                    prefixes.append(s[:pre])
                    s = rest
                    break
            suf = _suffix_length(s, pre)
            if suf:
                rest = s[:-suf]
                if rest and rest in special:
                    suffixes.append(s[-suf:])
                    s = rest
                    break
            if pre and suf and pre + suf <= len(s):
                prefixes.append(s[:pre])
                suffixes.append(s[-suf:])
                s = s[pre:-suf]
            elif pre:
                prefixes.append(s[:pre])
                s = s[pre:]
            elif suf:
                suffixes.append(s[-suf:])
                s = s[:-suf]
        if not s:
            core = []
        elif s in special:
            core = list(special[s])
        elif _is_url(s):
            core = [s]
        else:
            core = self._infix_split(s)
        suffixes.reverse()
        return prefixes + core + suffixes

    @staticmethod
    def _infix_split(s: str) -> list[str]:
        out, start = [], 0
        for m in _infix_finditer(s):
            a, b = m.span()
            if a == 0:  # an infix at the very start never splits
                continue
            if a != start:
                out.append(s[start:a])
            if a != b:
                out.append(s[a:b])
            start = b
        if start < len(s):
            out.append(s[start:])
        return out

    def _merge_specials(self, tokens: list[str]) -> list[str]:
        n = len(tokens)
        if n < 2:
            return tokens
        heads = self._merge_heads
        starts = [i for i in range(n - 1) if (tokens[i], tokens[i + 1]) in heads]
        if not starts:
            return tokens
        found = []  # (length, start, key)
        for start in starts:
            for length in range(2, min(self._merge_max, n - start) + 1):
                key = self._merge.get(tuple(tokens[start:start + length]))
                if key is not None:
                    found.append((length, start, key))
        if not found:
            return tokens
        # longest first, then leftmost; a match may not start or end inside one already taken
        found.sort(key=lambda f: (-f[0], f[1]))
        taken: set[int] = set()
        chosen = {}
        for length, start, key in found:
            if start not in taken and start + length - 1 not in taken:
                chosen[start] = (length, key)
            taken.update(range(start, start + length))
        out, i = [], 0
        while i < n:
            if i in chosen:
                length, key = chosen[i]
                out += self.special[key]
                i += length
            else:
                out.append(tokens[i])
                i += 1
        return out

    def chunk(self, chunk: str) -> Chunk:
        info = self._cache.get(chunk) or self._long.get(chunk)
        if info is None:
            tokens = tuple(self._merge_specials(self._split(chunk)))
            info = Chunk(tokens)
            if len(chunk) <= LONG_CHUNK:
                if len(self._cache) >= _CACHE_LIMIT:
                    self._cache.clear()
                self._cache[chunk] = info
            else:
                if len(self._long) >= 4:
                    self._long.pop(next(iter(self._long)))
                self._long[chunk] = info
        return info

    def words(self, text: str) -> list[str]:
        """The non-whitespace tokens of ``text``, as ``datatrove.utils.text.split_into_words``."""
        out: list[str] = []
        cache = self._cache
        for piece in text.split():
            info = cache.get(piece)
            if info is None:
                info = self.chunk(piece)
            out += info.tokens
        return out

    def count_words(self, text: str) -> int:
        """``len(self.words(text))`` without building the list."""
        cache, n = self._cache, 0
        for piece in text.split():
            info = cache.get(piece)
            if info is None:
                info = self.chunk(piece)
            n += len(info.tokens)
        return n

    def count_sentences(self, line: str) -> int:
        """Sentences in ``line`` by spaCy's rule-based sentencizer (at least 1 for any text).

        A new sentence starts at the first non-punctuation token after a sentence-final token. A run
        of whitespace other than a single space is a (non-punctuation) token of its own in spaCy."""
        count, seen = 1, False
        cache = self._cache
        for piece in _WS_RUNS.findall(line):
            if piece[0].isspace():
                if seen and piece != " ":
                    count += 1
                    seen = False
                continue
            info = cache.get(piece)
            if info is None:
                info = self.chunk(piece)
            added, seen = info.sentences(seen)
            count += added
        return count


_WS_RUNS = re.compile(r"\s+|\S+")


_WORD, _PUNCT_TOKEN, _END_TOKEN = 0, 1, 2
_token_kinds: dict[str, int] = {}


def _token_kind(token: str) -> int:
    kind = _token_kinds.get(token)
    if kind is None:
        kind = _END_TOKEN if token in SENTENCE_END_TOKENS else _PUNCT_TOKEN if _is_punct(token) else _WORD
        if len(_token_kinds) < _CACHE_LIMIT:
            _token_kinds[token] = kind
    return kind


def _sentence_transition(tokens: tuple[str, ...], seen: bool) -> tuple[int, bool]:
    added = 0
    for tok in tokens:
        kind = _token_kind(tok)
        if kind == _END_TOKEN:
            seen = True
        elif seen and kind == _WORD:
            added += 1
            seen = False
    return added, seen


_WORDS: EnglishWords | None = None


def english_words() -> EnglishWords:
    """The process-wide tokenizer (built once: about 50 ms)."""
    global _WORDS
    if _WORDS is None:
        _WORDS = EnglishWords()
    return _WORDS
