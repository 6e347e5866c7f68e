"""Byte-level BPE for a model trained from scratch: learn merges on a corpus
and write tokenizer.json. Encoding is the library's (train/tokenize.ts).

The tokenizer.json has the layout of lib/checkpoint/tokenizer.ts's
buildTinyTokenizerJson (Hugging Face format): ids 0..3 are OPT's specials
<s> <pad> </s> <unk>, ids 4..259 the 256 GPT-2 byte symbols in code-point
order, then one token per merge. A TemplateProcessing post-processor
prepends the BOS: </s> (id 2) as OPT does, or <s> (id 0) for a LLaMA-family
model.
"""

import heapq
import json
import re

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
N_BASE = len(SPECIALS) + 256

# GPT-2's pre-tokenisation pattern; Python's `re` has no \p{L}/\p{N}, so
# letters are [^\W\d_] and numbers \d (identical on the ASCII Brown corpus).
_PAT = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+""")


def _bytes_to_unicode():
    keep = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    out, n = [], 0
    for b in range(256):
        if b in keep:
            out.append(chr(b))
        else:
            out.append(chr(256 + n))
            n += 1
    return out


BYTE_TO_UNICODE = _bytes_to_unicode()


def pretokenize(text):
    """Text -> byte-level words (strings of byte symbols)."""
    return ["".join(BYTE_TO_UNICODE[b] for b in piece.encode("utf-8")) for piece in _PAT.findall(text)]


def train_merges(text, num_merges, log=None):
    """Learn `num_merges` merges: each step merges the most frequent adjacent
    pair (ties: smallest left, then right symbol) whose concatenation is not a
    token yet. A lazy max-heap keeps the search cheap; only the words holding
    the merged pair are recounted."""
    counts = {}
    for w in pretokenize(text):
        counts[w] = counts.get(w, 0) + 1
    words = [list(w) for w in counts]
    freqs = list(counts.values())
    known = set(SPECIALS) | set(BYTE_TO_UNICODE)
    pair_count, pair_words = {}, {}

    def add(wi, sign):
        syms, f = words[wi], freqs[wi]
        for i in range(len(syms) - 1):
            p = (syms[i], syms[i + 1])
            c = pair_count.get(p, 0) + sign * f
            pair_count[p] = c
            if sign > 0:
                pair_words.setdefault(p, set()).add(wi)
            touched.add(p)

    touched = set()
    for wi in range(len(words)):
        add(wi, 1)
    heap = [(-c, p) for p, c in pair_count.items()]
    heapq.heapify(heap)
    merges = []
    while len(merges) < num_merges:
        if not heap:
            raise ValueError(f"bpe: the corpus allows only {len(merges)} merges, {num_merges} asked")
        negc, p = heapq.heappop(heap)
        if pair_count.get(p, 0) != -negc or -negc <= 0:
            continue  # stale entry
        left, right = p
        merged = left + right
        if merged in known:
            continue
        merges.append(p)
        known.add(merged)
        touched = set()
        for wi in list(pair_words[p]):
            syms = words[wi]
            if len(syms) < 2:
                continue
            add(wi, -1)
            out, i = [], 0
            while i < len(syms):
                if i + 1 < len(syms) and syms[i] == left and syms[i + 1] == right:
                    out.append(merged)
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            words[wi] = out
            add(wi, 1)
        for q in touched:
            c = pair_count.get(q, 0)
            if c > 0:
                heapq.heappush(heap, (-c, q))
        if log and len(merges) % 1000 == 0:
            log(f"bpe: {len(merges)}/{num_merges} merges")
    return merges


class Tokenizer:
    """Byte-level BPE in the layout above, from its merge table. `bos` is the
    token its post-processor prepends: OPT's `</s>`, or `<s>` for a LLaMA-family
    model (whose tokenizer_config.json then says add_bos_token)."""

    def __init__(self, merges, bos="</s>"):
        if bos not in SPECIALS:
            raise ValueError(f"bpe: bos must be one of {SPECIALS}, got {bos!r}")
        self.merges = [tuple(m) for m in merges]
        self.bos = bos
        vocab = {s: i for i, s in enumerate(SPECIALS)}
        for s in sorted(BYTE_TO_UNICODE, key=ord):
            vocab[s] = len(vocab)
        for l, r in self.merges:
            vocab[l + r] = len(vocab)
        self.vocab = vocab

    @property
    def size(self):
        return len(self.vocab)

    def to_json(self):
        """tokenizer.json (Hugging Face format) as a dict."""

        def byte_level(prefix):
            return {"type": "ByteLevel", "add_prefix_space": prefix, "trim_offsets": True, "use_regex": True}

        bos = {"SpecialToken": {"id": self.bos, "type_id": 0}}
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [
                {"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                 "normalized": False, "special": True}
                for i, s in enumerate(SPECIALS)
            ],
            "normalizer": None,
            "pre_tokenizer": byte_level(False),
            "post_processor": {
                "type": "TemplateProcessing",
                "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [bos, {"Sequence": {"id": "A", "type_id": 0}}, bos, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {self.bos: {"id": self.bos, "ids": [self.vocab[self.bos]], "tokens": [self.bos]}},
            },
            "decoder": byte_level(True),
            "model": {
                "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                "vocab": self.vocab,
                "merges": [f"{l} {r}" for l, r in self.merges],
            },
        }

    def save(self, folder, max_length):
        """tokenizer.json and tokenizer_config.json into `folder`."""
        with open(f"{folder}/tokenizer.json", "w", encoding="utf-8") as f:
            json.dump(self.to_json(), f, ensure_ascii=False)
        with open(f"{folder}/tokenizer_config.json", "w") as f:
            json.dump({"tokenizer_class": "GPT2Tokenizer" if self.bos == "</s>" else "PreTrainedTokenizerFast",
                       "bos_token": self.bos, "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
                       "add_bos_token": True, "model_max_length": max_length}, f, indent=2)
            f.write("\n")
