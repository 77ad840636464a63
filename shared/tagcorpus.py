"""A small named-entity corpus built offline (templates × name lists, seeded), for the demo, tests and benchmarks.

Sentences such as "Ada Lovelace visited Paris with the Royal Society ." tagged in BIO (PER, LOC, ORG). Entity
names are drawn from disjoint pools for training and validation when asked, so a model must generalise from the
context words rather than memorise names.
"""

from __future__ import annotations

import json
import random

PEOPLE = [
    "Ada Lovelace",
    "Alan Turing",
    "Grace Hopper",
    "Marie Curie",
    "Isaac Newton",
    "Emmy Noether",
    "Niels Bohr",
    "Rosalind Franklin",
    "Carl Gauss",
    "Lise Meitner",
    "John Smith",
    "Maria Garcia",
    "Wei Chen",
    "Fatima Khan",
    "Olga Petrova",
    "Kenji Tanaka",
    "Amara Okafor",
    "Lucas Silva",
    "Sofia Rossi",
    "Liam Murphy",
    "Anna Berg",
    "Pedro Alves",
    "Hana Kim",
    "Omar Haddad",
    "Eva Novak",
    "Ravi Patel",
    "Mei Lin",
    "Jonas Weber",
]
PLACES = [
    "Paris",
    "London",
    "Berlin",
    "Tokyo",
    "Nairobi",
    "Lima",
    "Oslo",
    "Cairo",
    "Toronto",
    "Mumbai",
    "Sydney",
    "Madrid",
    "Seoul",
    "Lagos",
    "Vienna",
    "Dublin",
    "Lisbon",
    "Prague",
    "Quito",
    "Hanoi",
    "Accra",
    "Bogota",
    "New York",
    "Buenos Aires",
    "Cape Town",
    "Rio de Janeiro",
    "Kuala Lumpur",
    "San Francisco",
]
ORGS = [
    "Royal Society",
    "United Nations",
    "Red Cross",
    "World Bank",
    "Acme Corp",
    "Globex",
    "Initech",
    "Umbrella Labs",
    "Stark Industries",
    "Wayne Enterprises",
    "Blue Origin",
    "Open University",
    "National Gallery",
    "City Council",
    "Science Museum",
    "Harbor Bank",
    "Northwind Traders",
    "Contoso",
    "Fabrikam",
    "Tailspin Toys",
]
TEMPLATES = [
    "{PER} visited {LOC} last week .",
    "{PER} works for {ORG} in {LOC} .",
    "The {ORG} opened a new office in {LOC} .",
    "Yesterday {PER} met {PER} at the {ORG} .",
    "{PER} was born in {LOC} and later moved to {LOC} .",
    "According to {ORG} , prices in {LOC} rose sharply .",
    "{PER} said the {ORG} would fund the project .",
    "A spokesperson for {ORG} confirmed that {PER} resigned .",
    "Flights from {LOC} to {LOC} were cancelled on Monday .",
    "{PER} gave a talk about climate at the {ORG} .",
    "Officials in {LOC} thanked {PER} for the donation .",
    "The report by {ORG} was published in {LOC} .",
]


def sentences(n: int, seed: int = 0, part: str = "all") -> list[tuple[list[str], list[str]]]:
    """``n`` tagged sentences; ``part`` ``train`` / ``val`` draws names from disjoint halves of each pool."""
    rng = random.Random(seed)
    pools = {"PER": PEOPLE, "LOC": PLACES, "ORG": ORGS}
    if part in ("train", "val"):
        pools = {k: (v[::2] if part == "train" else v[1::2]) for k, v in pools.items()}
    out = []
    for _ in range(n):
        tokens: list[str] = []
        tags: list[str] = []
        for piece in rng.choice(TEMPLATES).split():
            if piece.startswith("{") and piece.endswith("}"):
                typ = piece[1:-1]
                words = rng.choice(pools[typ]).split()
                tokens += words
                tags += [f"B-{typ}"] + [f"I-{typ}"] * (len(words) - 1)
            else:
                tokens.append(piece)
                tags.append("O")
        out.append((tokens, tags))
    return out


def conll(rows: list[tuple[list[str], list[str]]]) -> str:
    """CoNLL text: a token and its tag per line, a blank line between sentences."""
    return "-DOCSTART- O\n\n" + "\n\n".join("\n".join(f"{w} {t}" for w, t in zip(*r, strict=True)) for r in rows) + "\n"


def jsonl(rows: list[tuple[list[str], list[str]]]) -> str:
    return "".join(json.dumps({"tokens": w, "tags": t}) + "\n" for w, t in rows)


SAMPLE_TEXTS = [
    "Grace Hopper visited Tokyo with the Red Cross.",
    "Officials in Lagos thanked Wei Chen for the donation.",
    "The World Bank opened a new office in Buenos Aires.",
]
