"""Held-out pools of the generalisation protocol: their prompts, their plan, their manifests.

Two pools, each = its prompts x the selected conditions (every prompt read in every condition):

- ``generator``: voice-assistant prompts from the corpus' own generator (``corpus_prompts.command_prompts``)
  with another seed (default 12), leaving out every prompt the accented benchmark reads (its pool and demo
  set at the recipe's defaults). The generator's small domains (timers, questions, messages, ...) are almost
  all in the teacher's training text, its large ones (connected digits, shopping, weather) mostly not, so each
  prompt is tagged with its ``prompt_set`` (below) and ``choral eval --by prompt_set`` reports each;
- ``unseen-words``: prompts with words the teacher's training text never contains, alternating two kinds:
  the generator's own templates filled with new slot values (:data:`NEW_SLOTS`: a familiar frame around one or
  two new words, "what is the weather in lisbon tomorrow") and sentences of :data:`UNSEEN_PASSAGE` (written for
  this protocol: mostly new words). Every prompt holds at least one word outside the teacher's training text
  (checked by :func:`unseen_word_prompts`).

Prompt sets: ``teacher-text`` (the text is a teacher_train / teacher_dev prompt), ``new`` (it is not, but all
its words are in the teacher's training text), ``new-words-command`` and ``new-words-sentence`` (a new-slot
command or a passage sentence with words outside it).

A fraction of each pool's cuts (default 10%) is annotated, stratified by condition (``make_corpus.annotated_ids``:
at least one per condition). Cuts carry the condition as ``custom.accent`` so ``choral eval --by accent``
reports per condition. Nothing here synthesises audio except :func:`synthesize_pool`.
"""

from __future__ import annotations

import itertools
import multiprocessing
import random
import re
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from gen_conditions import ACCENTED, Condition

if str(ACCENTED) not in sys.path:
    sys.path.insert(0, str(ACCENTED))

import corpus_prompts  # noqa: E402
from corpus_prompts import Prompt, command_prompts, passage_prompts, reference_text  # noqa: E402
from make_corpus import Item, opaque_cut_id  # noqa: E402

GENERATOR, UNSEEN = "generator", "unseen-words"
UNSEEN_DOMAIN = "unseen-passage"
POOLS: tuple[str, ...] = (GENERATOR, UNSEEN)

# Written for this protocol: everyday sentences whose nouns and verbs the teacher's training text
# (voice-assistant commands) does not contain. No digits, no apostrophes.
UNSEEN_PASSAGE = """\
The beekeeper lifted the lid and smoke drifted over the hive.
A violin maker sanded the maple until it felt like silk.
Our neighbour grows pumpkins, courgettes and enormous sunflowers.
The glacier retreated further up the valley every summer.
She repaired the bicycle chain with a borrowed spanner.
Penguins huddle together to survive the polar winter.
The librarian stamped the returned novels one by one.
A thunderstorm flooded the cellar of the old brewery.
Grandfather whittled a wooden whistle for his grandson.
The orchestra tuned their instruments before the overture.
Volunteers planted hedges along the muddy footpath.
The carpenter measured twice and sawed the plank once.
Lanterns glowed softly across the frozen canal.
A curious fox sniffed around the abandoned caravan.
The pharmacist explained the dosage with great patience.
Astronomers photographed a comet through the observatory dome.
The blacksmith hammered the glowing horseshoe into shape.
Wild strawberries ripened beneath the crumbling garden wall.
The tailor stitched a velvet collar onto the jacket.
Fog rolled across the moorland and hid the cottages.
The goalkeeper dived and tipped the penalty over the crossbar.
A hedgehog shuffled slowly through the fallen leaves.
The chemist diluted the solution in a glass beaker.
Shepherds gathered their flock before the blizzard arrived.
The potter shaped a tall vase on the spinning wheel.
Our canoe drifted past reeds, herons and sleepy ducks.
The journalist interviewed a retired submarine engineer.
Icicles dangled from the gutters of the farmhouse.
The baker kneaded dough while the kettle whistled.
A squirrel buried acorns beneath the chestnut tree.
The surgeon scrubbed her hands before the operation.
Thick ivy climbed the chimney of the vicarage.
The mechanic replaced the rusty exhaust and the brake pads.
Dolphins leapt beside the fishing trawler at dawn.
The gardener pruned the roses and raked the gravel.
A cathedral choir rehearsed an ancient hymn.
The plumber unblocked the drain with a flexible rod.
Migrating geese honked loudly above the marshes.
The pilot announced turbulence over the mountains.
Children built a snowman with a carrot nose and pebble eyes.
The auctioneer banged his gavel and sold the painting.
A lonely lighthouse keeper painted seashells in his spare hours.
The architect sketched a bridge across the ravine.
Cheerful musicians busked outside the railway arcade.
The zookeeper fed the giraffes crunchy branches.
Autumn gales scattered the apples across the orchard.
The dentist polished the patient molars gently.
A weaver threaded crimson wool through the loom.
The cyclists pedalled uphill against a fierce headwind.
Scientists measured the salinity of the estuary.
The florist wrapped tulips in brown paper and string.
Owls hooted from the hollow oak behind the barn.
The firefighters rescued a kitten from the drainpipe.
A professor lectured about volcanoes and earthquakes.
The sailors hoisted the mainsail and tightened the rigging.
Pebbles rattled as the tide withdrew from the shingle beach.
The jeweller engraved initials on the silver bracelet.
Badgers emerged from their burrow after sunset.
The shopkeeper polished brass doorknobs until they gleamed.
A tortoise munched dandelions in the sunny courtyard.
"""


# New values for the generator's slots (templates of corpus_prompts.TEMPLATES): words of everyday requests that
# the teacher's training text does not hold.
NEW_SLOTS: dict[str, tuple[str, ...]] = {
    "city": ("lisbon", "nairobi", "helsinki", "montreal", "vienna", "oslo", "prague", "santiago", "manila",
             "cardiff", "belfast", "auckland"),
    "artist": ("fleetwood mac", "bruce springsteen", "aretha franklin", "the kinks", "ella fitzgerald",
               "stevie wonder", "dolly parton", "bob dylan"),
    "genre": ("blues", "salsa", "opera", "techno", "gospel"),
    "device": ("dishwasher", "projector", "humidifier", "printer", "doorbell", "toaster"),
    "room": ("attic", "basement", "conservatory", "nursery", "pantry", "porch"),
    "item": ("cucumbers", "mushrooms", "peppers", "grapes", "biscuits", "sausages", "cherries", "pears"),
    "place": ("the aquarium", "the cathedral", "the harbour", "the ferry terminal", "the zoo"),
    "poi": ("bakery", "launderette", "hardware store", "florist", "cinema"),
    "name": ("oliver", "fatima", "thomas", "chloe", "rajesh", "hannah"),
}


@dataclass(frozen=True)
class PoolPlan:
    """One pool: its name, prompts, conditions, the items to synthesise and which cut ids are annotated."""

    name: str
    prompts: tuple[Prompt, ...]
    conditions: tuple[Condition, ...]
    items: tuple[Item, ...]
    annotated: frozenset[str]
    prompt_sets: dict[str, str]          # prompt id -> its prompt set (CorpusTexts.prompt_set)

    @property
    def split(self) -> str:
        return f"gen-{self.name}"


@dataclass(frozen=True)
class CorpusTexts:
    """What the accented corpus holds, from its recipe's plan at the defaults (no synthesis)."""

    benchmark: frozenset[str]       # prompt texts of the benchmark pool and the demo set
    teacher: frozenset[str]         # prompt texts of teacher_train and teacher_dev
    train_words: frozenset[str]     # every word of the teacher's training text

    def prompt_set(self, prompt: Prompt) -> str:
        """``teacher-text``, ``new``, ``new-words-command`` or ``new-words-sentence`` (module docstring)."""
        if prompt.text in self.teacher:
            return "teacher-text"
        if not _has_new_word(prompt.text, set(self.train_words)):
            return "new"
        return "new-words-sentence" if prompt.domain == UNSEEN_DOMAIN else "new-words-command"


def corpus_texts(seed: int = 4) -> CorpusTexts:
    """The accented corpus' prompt texts and the teacher's training words (recipe defaults, ``seed``)."""
    import make_corpus

    args = make_corpus.parse_args(["--seed", str(seed)])
    items = make_corpus.plan_full(args.seed, args.pool_prompts, args.dev_prompts, args.train_prompts,
                                  args.train_readings, args.dev_readings)
    items += make_corpus.plan_demo(args.seed, args.demo_prompts)
    return CorpusTexts(frozenset(i.prompt.text for i in items if i.split in ("pool", "demo")),
                       frozenset(i.prompt.text for i in items if i.split.startswith("teacher")),
                       frozenset(w for i in items if i.split == "teacher_train" for w in i.prompt.text.split()))


def generator_prompts(count: int, seed: int, exclude: set[str]) -> list[Prompt]:
    """``count`` prompts of the corpus generator with ``seed``, none of whose texts is in ``exclude``."""
    if count < 1:
        raise ValueError("a pool needs at least one prompt")
    wanted = count + len(exclude)
    kept = [p for p in command_prompts(wanted, seed) if p.text not in exclude][:count]
    if len(kept) < count:
        raise ValueError(f"the generator yields only {len(kept)} prompts outside the corpus")
    return [Prompt(f"gen{seed}-{p.id}", p.domain, p.spoken, p.text) for p in kept]


def _has_new_word(text: str, train_words: set[str]) -> bool:
    return any(word not in train_words for word in text.split())


def new_slot_prompts(count: int, seed: int, train_words: set[str], exclude: set[str]) -> list[Prompt]:
    """``count`` fillings of the generator's templates in which at least one slot takes a :data:`NEW_SLOTS` value,
    each holding a word outside ``train_words``; domains round-robin, deterministic in ``seed``."""
    rng = random.Random(seed)
    per_domain: dict[str, list[str]] = {}
    for domain, templates in corpus_prompts.TEMPLATES.items():
        texts: set[str] = set()
        for template in templates:
            names = re.findall(r"{(\w+)}", template)
            if "digits" in names or not any(name in NEW_SLOTS for name in names):
                continue
            pools = [NEW_SLOTS.get(name) or corpus_prompts._SLOTS[name] for name in names]
            texts.update(template.format(**dict(zip(names, values))) for values in itertools.product(*pools))
        kept = sorted(t for t in texts if t not in exclude and _has_new_word(reference_text(t), train_words))
        rng.shuffle(kept)
        if kept:
            per_domain[domain] = kept
    out: list[Prompt] = []
    for domain in itertools.cycle(list(per_domain)):
        if len(out) >= count or not any(per_domain.values()):
            break
        if per_domain[domain]:
            text = per_domain[domain].pop()
            out.append(Prompt(f"newslot-{domain}-{len(out):03d}", f"new-{domain}", text, reference_text(text)))
    if len(out) < count:
        raise ValueError(f"the templates yield only {len(out)} prompts with new slot values")
    return out


def passage_sentences() -> list[str]:
    """The sentences of :data:`UNSEEN_PASSAGE`."""
    return [s.strip() for s in UNSEEN_PASSAGE.splitlines() if s.strip()]


def unseen_word_prompts(count: int, train_words: set[str], exclude: set[str], seed: int = 12) -> list[Prompt]:
    """``count`` prompts alternating new-slot commands (:func:`new_slot_prompts`, the extra one when ``count`` is
    odd) and the first sentences of :data:`UNSEEN_PASSAGE`. Every prompt must hold a word outside ``train_words``
    and be absent from ``exclude`` (a ValueError otherwise: it would not test unseen words)."""
    sentences = passage_sentences()
    n_passage = count // 2
    if count < 1 or n_passage > len(sentences):
        raise ValueError(f"the unseen-words pool has 1 to {2 * len(sentences) + 1} prompts, not {count}")
    commands = new_slot_prompts(count - n_passage, seed, train_words, exclude)
    passage = [Prompt(f"unseen-{i:03d}", UNSEEN_DOMAIN, spoken, reference_text(spoken))
               for i, spoken in enumerate(sentences[:n_passage])]
    prompts = [p for pair in itertools.zip_longest(commands, passage) for p in pair if p is not None]
    for prompt in prompts:
        if prompt.text in exclude or not _has_new_word(prompt.text, train_words):
            raise ValueError(f"prompt {prompt.id} has no word outside the teacher's training text: {prompt.text!r}")
    return prompts


def out_of_vocabulary_rate(prompts: list[Prompt], train_words: set[str]) -> float:
    """Fraction of the prompts' words (tokens) that never occur in the teacher's training text."""
    words = [w for p in prompts for w in p.text.split()]
    return sum(w not in train_words for w in words) / max(len(words), 1)


def annotated_ids(items: list[Item], fraction: float, seed: int) -> frozenset[str]:
    """``fraction`` of the cuts of every condition (rounded, at least one), chosen by a seeded hash of the id."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"the annotated fraction must lie in [0, 1), not {fraction}")
    by_condition: dict[str, list[str]] = {}
    for item in items:
        by_condition.setdefault(item.accent, []).append(item.cut_id)
    chosen: set[str] = set()
    for ids in by_condition.values():
        ranked = sorted(ids, key=lambda cut_id: zlib.crc32(f"{seed}:{cut_id}".encode()))
        n = 0 if fraction == 0.0 else max(1, round(fraction * len(ids)))
        chosen.update(ranked[:n])
    return frozenset(chosen)


def plan_pool(name: str, prompts: list[Prompt], conditions: tuple[Condition, ...], fraction: float,
              seed: int, corpus: CorpusTexts | None = None) -> PoolPlan:
    """Every prompt read once in every condition; ``fraction`` annotated per condition; each prompt tagged with
    its prompt set against ``corpus`` (``unknown`` without one)."""
    split = f"gen-{name}"
    items = []
    for prompt in prompts:
        for condition in conditions:
            cut_id = opaque_cut_id(split, prompt, condition.name, condition.speaker, seed)
            items.append(Item(cut_id, split, prompt, condition.name, condition.speaker, condition.voice,
                              zlib.crc32(f"{seed}:{cut_id}".encode())))
    prompt_sets = {p.id: corpus.prompt_set(p) if corpus is not None else "unknown" for p in prompts}
    return PoolPlan(name, tuple(prompts), conditions, tuple(items), annotated_ids(items, fraction, seed), prompt_sets)


def plan_pools(conditions: tuple[Condition, ...], generator: int, unseen: int, fraction: float, seed: int,
               prompt_seed: int) -> list[PoolPlan]:
    """The protocol's pools (a pool with 0 prompts is left out)."""
    corpus = corpus_texts()
    pools = []
    if generator:
        pools.append(plan_pool(GENERATOR, generator_prompts(generator, prompt_seed, set(corpus.benchmark)),
                               conditions, fraction, seed, corpus))
    if unseen:
        prompts = unseen_word_prompts(unseen, set(corpus.train_words), set(corpus.benchmark | corpus.teacher),
                                      prompt_seed)
        pools.append(plan_pool(UNSEEN, prompts, conditions, fraction, seed, corpus))
    if not pools:
        raise ValueError("no pool: give --prompts or --unseen-prompts")
    return pools


def _render(job: tuple[Item, str, Condition]) -> tuple[str, int]:
    """One item to FLAC (kept if already there, so reruns resume); its sample count."""
    import soundfile as sf
    from gen_conditions import SAMPLE_RATE, render

    item, path, condition = job
    if Path(path).exists():
        return item.cut_id, sf.info(path).frames
    audio = render(item.prompt.spoken, condition, item.seed)
    tmp = path + ".tmp"
    sf.write(tmp, audio, SAMPLE_RATE, subtype="PCM_16", format="FLAC")
    Path(tmp).rename(path)
    return item.cut_id, len(audio)


def synthesize_pool(plan: PoolPlan, folder: Path, jobs: int) -> dict[str, tuple[str, int]]:
    """Render the pool's audio into ``folder/audio`` on ``jobs`` processes; cut id -> (path, samples)."""
    audio_dir = folder / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    conditions = {c.name: c for c in plan.conditions}
    work = [(item, str(audio_dir / f"{item.cut_id}.flac"), conditions[item.accent]) for item in plan.items]
    out: dict[str, tuple[str, int]] = {}
    started = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        for done, (cut_id, samples) in enumerate(pool.imap_unordered(_render, work, chunksize=4), 1):
            out[cut_id] = (str(audio_dir / f"{cut_id}.flac"), samples)
            if done % 100 == 0 or done == len(work):
                print(f"  {plan.name}: synthesised {done}/{len(work)} ({time.perf_counter() - started:.0f} s)",
                      flush=True)
    return out


def reference(plan: PoolPlan, item: Item, samples: int) -> dict:
    """The evaluation-only reference of one cut (a lhotse supervision): text, condition, prompt, prompt set."""
    from gen_conditions import SAMPLE_RATE
    from lhotse import SupervisionSegment

    return SupervisionSegment(id=item.cut_id, recording_id=item.cut_id, start=0.0, duration=samples / SAMPLE_RATE,
                              channel=0, text=item.prompt.text, speaker=item.speaker, language="en",
                              custom={"accent": item.accent, "voice": item.voice, "prompt": item.prompt.id,
                                      "domain": item.prompt.domain,
                                      "prompt_set": plan.prompt_sets[item.prompt.id]}).to_dict()


def write_pool(plan: PoolPlan, audio: dict[str, tuple[str, int]], folder: Path) -> tuple[Path, Path]:
    """``folder/cuts.jsonl.gz`` (annotated cuts carry their text; make_corpus' writer) and
    ``folder/references.jsonl.gz``."""
    from lhotse import SupervisionSegment, SupervisionSet
    from make_corpus import write_split

    cuts, references = folder / "cuts.jsonl.gz", folder / "references.jsonl.gz"
    write_split(list(plan.items), audio, cuts, None, set(plan.annotated))
    items = sorted(plan.items, key=lambda i: i.cut_id)
    SupervisionSet.from_segments([SupervisionSegment.from_dict(reference(plan, i, audio[i.cut_id][1]))
                                  for i in items]).to_file(references)
    return cuts, references


def passage_overlap(prompts: list[Prompt]) -> int:
    """How many prompts are sentences of the benchmark's own read passage (the protocol expects none)."""
    passage = {p.text for p in passage_prompts()}
    return sum(p.text in passage for p in prompts)
