"""Prompts of the synthetic accented corpus: voice-assistant requests plus a read passage.

Each prompt has the text the TTS reads (``spoken``, with punctuation for prosody) and the
reference (``text``: lowercase words, numbers spelled out) that ASR output is scored against.
"""

from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
         "fourteen fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    """0..99 as English words (what a speaker says and a reference contains)."""
    if n < 20:
        return _ONES[n]
    tens, ones = divmod(n, 10)
    return _TENS[tens - 2] + ("" if ones == 0 else " " + _ONES[ones])


_SLOTS: dict[str, tuple[str, ...]] = {
    "city": ("chicago", "boston", "denver", "seattle", "atlanta", "dallas", "phoenix", "miami",
             "portland", "houston", "london", "glasgow", "kingston", "toronto", "dublin", "madrid"),
    "day": ("today", "tomorrow", "tonight", "on monday", "on friday", "this weekend"),
    "hour": tuple(number_words(n) for n in range(1, 13)),
    "ampm": ("in the morning", "in the evening"),
    "minutes": tuple(number_words(n) for n in (2, 3, 5, 8, 10, 12, 15, 20, 25, 30, 40, 45)),
    "artist": ("the beatles", "taylor swift", "bob marley", "adele", "queen", "miles davis",
               "elton john", "the rolling stones", "nina simone", "coldplay", "johnny cash", "abba"),
    "genre": ("jazz", "reggae", "rock", "classical", "country", "soul"),
    "device": ("lights", "lamp", "heater", "fan", "television", "speaker", "kettle", "radio"),
    "room": ("kitchen", "bedroom", "living room", "bathroom", "garage", "office", "hallway"),
    "onoff": ("on", "off"),
    "percent": tuple(number_words(n) for n in (10, 20, 30, 40, 50, 60, 70, 80, 90)),
    "degrees": tuple(number_words(n) for n in range(60, 78)),
    "place": ("the airport", "the train station", "the nearest hospital", "the city centre",
              "the museum", "the stadium", "the library", "the post office"),
    "poi": ("petrol station", "coffee shop", "pharmacy", "supermarket", "bank", "restaurant"),
    "quantity": ("one", "two", "three", "four", "six", "a dozen"),
    "item": ("eggs", "apples", "bananas", "tomatoes", "potatoes", "onions", "lemons", "carrots",
             "bottles of milk", "loaves of bread", "bags of rice", "tins of beans"),
    "question": ("how tall is the eiffel tower", "who wrote pride and prejudice",
                 "how far away is the moon", "what is the capital of australia",
                 "how many days are in a leap year", "who painted the mona lisa",
                 "what is the boiling point of water", "how deep is the pacific ocean",
                 "when did the first world war end", "how many legs does a spider have",
                 "what is the largest planet", "who invented the telephone",
                 "how old is the universe", "what language is spoken in brazil"),
    "name": ("mum", "dad", "sarah", "james", "maria", "david", "grace", "peter"),
    "message": ("i am running late", "see you soon", "call me back", "dinner is ready",
                "happy birthday", "i am on my way"),
}

# Domain -> templates; slot names in braces, plus {digits} for connected-digit strings.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "weather": ("what is the weather in {city} {day}", "will it rain in {city} {day}",
                "how cold will it be in {city} {day}", "do i need an umbrella in {city} {day}"),
    "timer": ("set a timer for {minutes} minutes", "wake me up at {hour} {ampm} {day}",
              "set an alarm for {hour} {ampm}", "snooze the alarm for {minutes} minutes"),
    "call": ("call {digits}", "dial {digits}"),
    "music": ("play {artist}", "play some {genre} music by {artist}", "shuffle songs by {artist}",
              "play {genre} music in the {room}"),
    "home": ("turn {onoff} the {device} in the {room}", "dim the {room} lights to {percent} percent",
             "set the {room} thermostat to {degrees} degrees"),
    "navigation": ("navigate to {place} in {city}", "find the nearest {poi}",
                   "how long is the drive to {city}"),
    "shopping": ("add {quantity} {item} to my shopping list", "remove {item} from my shopping list",
                 "order {quantity} {item} for delivery {day}"),
    "question": ("{question}", "what time is it in {city}", "when does the sun set in {city} {day}"),
    "message": ("send a message to {name} saying {message}", "remind me to call {name} {day}"),
}

# The shared read passage (written for this corpus); every accent reads every sentence.
PASSAGE = """\
The harbour town wakes early, long before the first bus climbs the hill.
Fishermen check their nets while the bakery on the corner lights its ovens.
By seven o'clock the market square is full of voices and the smell of fresh bread.
A small boy chases a grey cat between the stalls and nearly knocks over a crate of apples.
His grandmother calls him back, laughing, and buys him a warm roll with butter.
Down at the quay, a ferry sounds its horn and the gulls rise into the pale sky.
The ferry carries teachers, nurses and builders to the island across the bay.
Most of them read, some of them sleep, and a few simply watch the water.
In winter the crossing can be rough, and the captain waits for the wind to drop.
In summer the island fills with visitors who come for the beaches and the old lighthouse.
The lighthouse keeper retired years ago, but he still climbs the tower every Sunday.
He says the view reminds him that the world is larger than any single worry.
At noon the church bell rings twelve times and the shops close for lunch.
Children run home from school along the sea wall, counting the boats in the harbour.
In the afternoon the rain arrives from the west, quick and heavy, and then it is gone.
The streets shine under the lamps, and the cafes open their doors again.
An old radio plays music from a kitchen window above the bookshop.
Somebody is cooking fish with garlic, and the whole lane smells of it.
When the last ferry returns, the captain ties the ropes and switches off the engine.
He walks up the hill to his house, where his daughter is reading by the fire.
She asks him about the crossing, and he tells her the sea was kind today.
Later the town goes quiet, and only the lighthouse keeps its slow turning watch.
"""


@dataclass(frozen=True)
class Prompt:
    """One thing to read: ``id``, the domain, the TTS input and the reference text."""

    id: str
    domain: str
    spoken: str
    text: str


def reference_text(spoken: str) -> str:
    """Lowercase words without punctuation (o'clock keeps its apostrophe)."""
    words = re.sub(r"[^a-z' ]+", " ", spoken.lower().replace("-", " ")).split()
    return " ".join(w.strip("'") if w != "o'clock" else w for w in words)


def _digit_strings(rng: random.Random, count: int) -> list[str]:
    """Connected-digit strings of 4 to 7 digits, read digit by digit."""
    out = set()
    while len(out) < count:
        n = rng.randint(4, 7)
        out.add(" ".join(_ONES[rng.randrange(10)] for _ in range(n)))
    return sorted(out)


def _expand(template: str, digits: list[str]) -> list[str]:
    """Every filling of a template's slots."""
    names = re.findall(r"{(\w+)}", template)
    pools = [digits if name == "digits" else _SLOTS[name] for name in names]
    return [template.format(**dict(zip(names, values))) for values in itertools.product(*pools)]


def passage_prompts() -> list[Prompt]:
    """The read passage, one prompt per sentence."""
    sentences = [s.strip() for s in PASSAGE.splitlines() if s.strip()]
    return [Prompt(f"passage-{i:03d}", "passage", s, reference_text(s)) for i, s in enumerate(sentences)]


def command_prompts(count: int, seed: int) -> list[Prompt]:
    """``count`` distinct voice-assistant prompts, domains balanced round-robin, deterministic."""
    rng = random.Random(seed)
    digits = _digit_strings(rng, 400)
    per_domain: dict[str, list[str]] = {}
    for domain, templates in TEMPLATES.items():
        texts = sorted({t for template in templates for t in _expand(template, digits)})
        rng.shuffle(texts)
        per_domain[domain] = texts
    out: list[Prompt] = []
    for i in itertools.count():
        if len(out) >= count:
            break
        domain = list(TEMPLATES)[i % len(TEMPLATES)]
        pool = per_domain[domain]
        if not pool:
            if not any(per_domain.values()):
                raise ValueError(f"templates yield fewer than {count} prompts")
            continue
        text = pool.pop()
        out.append(Prompt(f"{domain}-{len(out):05d}", domain, text, reference_text(text)))
    return out
