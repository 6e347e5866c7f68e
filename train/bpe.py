"""Byte-level BPE: train merges on a corpus, encode text, write tokenizer.json.

The tokenizer.json has the layout of lib/checkpoint/tokenizer.ts's
buildTinyTokenizerJson (Hugging Face format): ids 0..3 are OPT's specials
<s> <pad> </s> <unk>, ids 4..259 the 256 GPT-2 byte symbols in code-point
order, then one token per merge. A TemplateProcessing post-processor
prepends </s> (id 2), as OPT does. `encode` here gives the ids that
@huggingface/tokenizers gives for the same file (test/train.test.ts checks it
on the held-out text), so the trainer and the library see the same ids.
"""

import heapq
import json
import os
import re
import shutil

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
BOS_ID = 2
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
    """Byte-level BPE with a merge table (rank = position in the table)."""

    def __init__(self, merges, vocab=None, source=None):
        """Our layout from merges alone, or any byte-level BPE given its vocab
        (`source`: the folder whose tokenizer files an export copies)."""
        self.merges = [tuple(m) for m in merges]
        self.ranks = {m: i for i, m in enumerate(self.merges)}
        self.source = source
        if vocab is None:
            vocab = {s: i for i, s in enumerate(SPECIALS)}
            for s in sorted(BYTE_TO_UNICODE, key=ord):
                vocab[s] = len(vocab)
            for l, r in self.merges:
                vocab[l + r] = len(vocab)
        self.vocab = vocab
        if "</s>" not in vocab:
            raise ValueError("no </s> token (OPT's BOS) in the vocabulary")
        self.bos_id = vocab["</s>"]
        self.id_to_token = {i: s for s, i in self.vocab.items()}
        self.special_ids = {i for s, i in self.vocab.items() if s in SPECIALS or s == "<|endoftext|>"}
        self._cache = {}

    @property
    def size(self):
        return max(self.vocab.values()) + 1

    def _word(self, w):
        ids = self._cache.get(w)
        if ids is not None:
            return ids
        syms = list(w)
        while len(syms) > 1:
            best, at = None, -1
            for i in range(len(syms) - 1):
                r = self.ranks.get((syms[i], syms[i + 1]))
                if r is not None and (best is None or r < best):
                    best, at = r, i
            if best is None:
                break
            l, r = self.merges[best]
            out, i = [], 0
            while i < len(syms):
                if i + 1 < len(syms) and syms[i] == l and syms[i + 1] == r:
                    out.append(l + r)
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            syms = out
        ids = [self.vocab[s] for s in syms]
        self._cache[w] = ids
        return ids

    def encode(self, text):
        """Ids of `text`, without BOS."""
        out = []
        for w in pretokenize(text):
            out.extend(self._word(w))
        return out

    def decode(self, ids):
        inv = {u: b for b, u in enumerate(BYTE_TO_UNICODE)}
        data = bytearray()
        for i in ids:
            if i in self.special_ids or i not in self.id_to_token:
                continue
            for ch in self.id_to_token[i]:
                data.append(inv[ch])
        return data.decode("utf-8", errors="replace")

    def to_json(self):
        """tokenizer.json (Hugging Face format) as a dict."""

        def byte_level(prefix):
            return {"type": "ByteLevel", "add_prefix_space": prefix, "trim_offsets": True, "use_regex": True}

        bos = {"SpecialToken": {"id": "</s>", "type_id": 0}}
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
                "special_tokens": {"</s>": {"id": "</s>", "ids": [BOS_ID], "tokens": ["</s>"]}},
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
        if self.source is not None:  # a tokenizer from --init: copy its files unchanged
            for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                         "special_tokens_map.json"):
                src = os.path.join(self.source, name)
                if os.path.isfile(src) and os.path.abspath(src) != os.path.abspath(os.path.join(folder, name)):
                    shutil.copyfile(src, os.path.join(folder, name))
            return
        with open(f"{folder}/tokenizer.json", "w", encoding="utf-8") as f:
            json.dump(self.to_json(), f, ensure_ascii=False)
        with open(f"{folder}/tokenizer_config.json", "w") as f:
            json.dump({"tokenizer_class": "GPT2Tokenizer", "bos_token": "</s>", "eos_token": "</s>",
                       "unk_token": "<unk>", "pad_token": "<pad>", "add_bos_token": True,
                       "model_max_length": max_length}, f, indent=2)
            f.write("\n")

    @staticmethod
    def load(folder):
        """Read the merges back from a tokenizer.json written by `save` (or any
        byte-level BPE tokenizer.json with the same base layout)."""
        with open(f"{folder}/tokenizer.json", encoding="utf-8") as f:
            j = json.load(f)
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in j["model"]["merges"]]
        tok = Tokenizer(merges)
        if tok.vocab != j["model"]["vocab"]:
            raise ValueError(f"{folder}/tokenizer.json: vocabulary layout differs from this trainer's "
                             "(specials 0..3, bytes 4..259, then merges)")
        return tok

    @staticmethod
    def load_any(folder):
        """A byte-level BPE tokenizer from a Hugging Face folder: tokenizer.json
        (model type BPE with a ByteLevel pre-tokenizer) or vocab.json + merges.txt."""
        tj = os.path.join(folder, "tokenizer.json")
        if os.path.isfile(tj):
            with open(tj, encoding="utf-8") as f:
                j = json.load(f)
            m = j.get("model") or {}
            if m.get("type") != "BPE":
                raise ValueError(f"{tj}: model type {m.get('type')!r}; the trainer reads byte-level BPE only")
            vocab = dict(m["vocab"])
            for t in j.get("added_tokens") or []:
                vocab.setdefault(t["content"], t["id"])
            merges = [tuple(x.split(" ")) if isinstance(x, str) else tuple(x) for x in m["merges"]]
            return Tokenizer(merges, vocab, folder)
        vj, mt = os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt")
        if os.path.isfile(vj) and os.path.isfile(mt):
            with open(vj, encoding="utf-8") as f:
                vocab = json.load(f)
            with open(mt, encoding="utf-8") as f:
                lines = [l.rstrip("\n") for l in f]
            merges = [tuple(l.split(" ")) for l in lines if l and not l.startswith("#version")]
            return Tokenizer(merges, vocab, folder)
        raise ValueError(f"{folder}: no tokenizer.json and no vocab.json + merges.txt")
