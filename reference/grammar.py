"""The language of the reference LM: world descriptions told in a joyful or a gloomy mood, and an exact parser.

sentence    := [opener " "] "a " mood_word " " size " " colour " " shape " " where [" " ending] "."
One mood runs through a sentence (opener, mood word and ending agree), so steering from gloomy to joyful has a
measurable target, and ``parse`` decides exactly whether a generated sentence belongs to the language. The LM is
trained on sentences with openers; a sentence may also start at "a", so a prompt of "a" leaves the mood open for the
LM to choose at a word that depends on context (its first token, after the start token, barely does).
"""

from __future__ import annotations

import re

import torch

from .world import COLOURS, POSITIONS, SHAPES, SIZES

MOODS = {
    "joyful": {"openers": ("look,", "hooray,", "how lovely,"), "words": ("cheerful", "bright", "happy"),
               "endings": ("smiles at me", "dances in the sun")},
    "gloomy": {"openers": ("alas,", "sadly,", "how bleak,"), "words": ("dreary", "dull", "lonely"),
               "endings": ("weeps alone", "fades into the dark")},
}
WHERE = {"left": "on the left", "center": "in the middle", "right": "on the right"}
assert set(WHERE) == set(POSITIONS)


def _alternatives(options) -> str:
    return "|".join(re.escape(option) for option in options)


_SENTENCE = re.compile(
    rf"(?:(?P<opener>{_alternatives(o for m in MOODS.values() for o in m['openers'])}) )?a "
    rf"(?P<word>{_alternatives(w for m in MOODS.values() for w in m['words'])}) "
    rf"(?P<size>{_alternatives(SIZES)}) (?P<colour>{_alternatives(COLOURS)}) (?P<shape>{_alternatives(SHAPES)}) "
    rf"(?P<where>{_alternatives(WHERE.values())})"
    rf"(?: (?P<ending>{_alternatives(e for m in MOODS.values() for e in m['endings'])}))?\.")


def sentence(generator: torch.Generator) -> str:
    def pick(options):
        options = tuple(options)
        return options[int(torch.randint(len(options), (1,), generator=generator))]

    mood = MOODS[pick(MOODS)]
    ending = pick((*mood["endings"], ""))
    return (f"{pick(mood['openers'])} a {pick(mood['words'])} {pick(SIZES)} {pick(COLOURS)} {pick(SHAPES)} "
            f"{WHERE[pick(WHERE)]}{' ' + ending if ending else ''}.")


def sentences(count: int, seed: int) -> list[str]:
    generator = torch.Generator().manual_seed(seed)
    return [sentence(generator) for _ in range(count)]


def _mood_of(part: str, kind: str) -> str:
    return next(name for name, mood in MOODS.items() if part in mood[kind])


def parse(text: str) -> dict[str, str] | None:
    """The sentence's mood and attributes if it belongs to the language, else None."""
    match = _SENTENCE.fullmatch(text.strip())
    if match is None:
        return None
    moods = {_mood_of(match["word"], "words")}
    if match["opener"]:
        moods.add(_mood_of(match["opener"], "openers"))
    if match["ending"]:
        moods.add(_mood_of(match["ending"], "endings"))
    if len(moods) != 1:
        return None
    position = next(name for name, words in WHERE.items() if words == match["where"])
    return {"mood": moods.pop(), "size": match["size"], "colour": match["colour"], "shape": match["shape"],
            "position": position}


def vocabulary() -> list[str]:
    """Every word and punctuation mark of the language, for a word-level tokenizer."""
    parts = [*SIZES, *COLOURS, *SHAPES, *WHERE.values(), "a", "."]
    for mood in MOODS.values():
        parts += [*mood["openers"], *mood["words"], *mood["endings"]]
    return sorted({word for part in parts for word in part.replace(",", " ,").replace(".", " .").split()})
