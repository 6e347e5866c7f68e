/**
 * A tiny, deterministic byte-level BPE trainer and its corpus, for the tiny
 * test checkpoints' tokenizers (lib/tiny/opt.ts, lib/tiny/tokenizers.ts): real
 * `tokenizer.json` files that `@huggingface/tokenizers` loads, learned on a
 * few paragraphs of plain English, the same bytes for the same settings.
 */
import { addedToken, BYTE_TO_UNICODE, bpeModel, byteLevel, GPT2_PATTERN, OPT_SPECIALS, prependBosTemplate, type TokenizerJson } from "../checkpoint/tokenizer_json.ts";


/**
 * The built-in training text of {@link buildTinyTokenizerJson}: plain English
 * prose, enough for 1,031 merges.
 *
 * @example
 * ```ts
 * buildTinyTokenizerJson({ numMerges: 100, corpus: TINY_CORPUS + "more text" });
 * ```
 */
export const TINY_CORPUS = `The quick brown fox jumps over the lazy dog. The dog did not move; it was asleep in the warm afternoon sun, and the fox was already far away across the field.

Language models read text as a sequence of tokens. A tokenizer splits the text into pieces, and each piece has a number. The model sees only the numbers, predicts the next one, and the tokenizer turns the numbers back into text. Byte-level tokenizers start from the 256 possible bytes, so every string can be written down, even one with emoji or letters from another alphabet.

When a model generates a long answer, most of the work is spent in the layers of the network. Some tokens are easy to predict and some are hard. Skipping layers for the easy tokens saves time, but the keys and values of earlier tokens must still be there when a later token looks back at them. If every token computes the top layers, and later tokens compute fewer layers than earlier ones, nothing is ever missing.

It was a cold morning in the small town by the river. People walked to work with their hands in their pockets, talking about the weather, the price of bread, and the news from the city. Children ran to school, and the baker opened his shop at seven o'clock, as he had done every day for thirty years.

Researchers measure the speed of a system in tokens per second and compare it with the quality of the text it writes. They often report the mean and the spread over several runs, because a single number can hide a slow start or a noisy machine. Good experiments are repeated, written down carefully, and shared with others.

"Where are you going?" she asked. "I'm going home," he said, "but I'll be back tomorrow, and we'll finish the work then." They'd waited all week for the results; now the numbers were finally in, and they were better than anyone had expected: 12 percent faster, 3 times cheaper, and just as accurate as before.

The library has many books about history, science, music and art. Students come in the evening to study, to write their papers, and sometimes just to sit quietly and think. The old librarian knows where every book is, and she is always happy to help someone find what they are looking for.

Mountains rise above the valley, covered with snow through the winter and with green grass and yellow flowers in the summer. Farmers bring their cattle up the slopes in June and down again in September. Hikers follow narrow paths between the rocks, drink from cold streams, and sleep in wooden huts under a sky full of stars.

Computers store numbers in binary, as long strings of zeros and ones. A processor fetches instructions from memory, decodes them, executes them, and writes the results back. Graphics cards run thousands of small threads together, which makes them well suited to multiplying large matrices, the central operation of neural networks.

My grandmother kept a garden behind her kitchen. She grew tomatoes, beans, potatoes, onions, carrots, lettuce, strawberries and raspberries, and every autumn she made jam, pickles and soup for the long months ahead. We helped her dig, plant, water and weed, and in exchange she told us stories about her childhood during the war.

Medicine has changed enormously during the last century. Vaccines protect millions of people from diseases that once killed children everywhere; antibiotics cure infections quickly; surgeons replace hearts, kidneys, hips and knees. Yet doctors still listen, examine, question and doubt, because each patient is different and the body remains mysterious.

Ships cross the ocean carrying containers of clothing, furniture, electronics, fruit, coffee, machinery and toys. Sailors watch the weather, check the engines, and navigate by satellite, though every officer still learns to use a compass and a chart. Storms can delay a voyage by days, and harbours are busy, noisy, crowded places.
`;

/** Compare two strings by UTF-16 code units (locale-independent, deterministic). */
function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** An adjacent symbol pair, its weighted count and the words that hold it. */
interface PairStat {
  left: string;
  right: string;
  count: number;
  words: Set<number>;
}

/**
 * Learn `numMerges` byte-level BPE merges from `corpus`. Each step merges the
 * most frequent adjacent pair (ties: smallest left symbol, then smallest right
 * symbol, by code units) whose concatenation is not yet a token, so every
 * merge adds exactly one new token. Pair counts are updated incrementally:
 * only the words holding the merged pair are recounted.
 */
function trainMerges(corpus: string, numMerges: number, known: Set<string>): string[] {
  // Unique pre-tokenised words (as byte-level symbols) with their counts.
  const counts = new Map<string, number>();
  const encoder = new TextEncoder();
  for (const piece of corpus.match(GPT2_PATTERN) ?? []) {
    let word = "";
    for (const byte of encoder.encode(piece)) word += BYTE_TO_UNICODE[byte];
    counts.set(word, (counts.get(word) ?? 0) + 1);
  }
  return trainWordMerges(counts, numMerges, known);
}

/**
 * The BPE merge loop of {@link trainMerges} over given words: each key of
 * `counts` is a word whose code points are its initial symbols (no symbol may
 * contain a space), each value its frequency. Returns `"left right"` merges,
 * most frequent first; every merge adds exactly one new token to `known`.
 */
export function trainWordMerges(counts: Map<string, number>, numMerges: number, known: Set<string>): string[] {
  const words: string[][] = [];
  const freqs: number[] = [];
  for (const [word, freq] of counts) {
    words.push(Array.from(word));
    freqs.push(freq);
  }

  // Key "left right": a byte-level symbol never contains a space.
  const pairs = new Map<string, PairStat>();
  const addPairs = (w: number, sign: 1 | -1): void => {
    const syms = words[w]!;
    for (let i = 0; i + 1 < syms.length; i++) {
      const left = syms[i]!;
      const right = syms[i + 1]!;
      const key = `${left} ${right}`;
      let stat = pairs.get(key);
      if (stat === undefined) {
        stat = { left, right, count: 0, words: new Set() };
        pairs.set(key, stat);
      }
      stat.count += sign * freqs[w]!;
      if (sign > 0) stat.words.add(w);
    }
  };
  for (let w = 0; w < words.length; w++) addPairs(w, 1);

  const merges: string[] = [];
  while (merges.length < numMerges) {
    let best: PairStat | null = null;
    for (const stat of pairs.values()) {
      if (stat.count <= 0 || known.has(stat.left + stat.right)) continue;
      if (
        best === null ||
        stat.count > best.count ||
        (stat.count === best.count && (cmp(stat.left, best.left) || cmp(stat.right, best.right)) < 0)
      ) {
        best = stat;
      }
    }
    if (best === null) {
      throw new Error(
        `buildTinyTokenizerJson: numMerges ${numMerges} is more than this corpus allows (${merges.length})`,
      );
    }
    const { left, right } = best;
    const merged = left + right;
    merges.push(`${left} ${right}`);
    known.add(merged);
    // Re-count only the words that hold the pair, merging left to right.
    for (const w of [...best.words]) {
      const syms = words[w]!;
      addPairs(w, -1);
      const out: string[] = [];
      for (let i = 0; i < syms.length; i++) {
        if (i + 1 < syms.length && syms[i] === left && syms[i + 1] === right) {
          out.push(merged);
          i++;
        } else {
          out.push(syms[i]!);
        }
      }
      words[w] = out;
      addPairs(w, 1);
    }
  }
  return merges;
}

/**
 * Build a deterministic, real byte-level BPE `tokenizer.json` (Hugging Face
 * format) for tiny test models: ids 0..3 are OPT's specials `<s>`, `<pad>`,
 * `</s>`, `<unk>` (special added tokens), ids 4..259 the 256 GPT-2 byte
 * symbols in code-point order, then one token per merge learned on `corpus`
 * (default {@link TINY_CORPUS}). ByteLevel pre-tokenizer (no prefix space) and
 * decoder, BPE model, and a TemplateProcessing post-processor that prepends
 * `</s>` (id 2) like OPT. The vocabulary has `260 + numMerges` tokens.
 *
 * Throws if `numMerges` is not a non-negative integer or exceeds what the
 * corpus can teach (1,031 for the built-in corpus).
 *
 * @example
 * ```ts
 * const json = buildTinyTokenizerJson({ numMerges: 252 }); // 512 tokens
 * await Bun.write(`${dir}/tokenizer.json`, JSON.stringify(json));
 * const tok = await SkipTokenizer.load(dir);
 * tok.encode("Hello"); // [2, ...]
 * ```
 */
export function buildTinyTokenizerJson(opts: { numMerges: number; corpus?: string }): TokenizerJson {
  const { numMerges, corpus = TINY_CORPUS } = opts;
  if (!Number.isInteger(numMerges) || numMerges < 0) {
    throw new Error(`buildTinyTokenizerJson: numMerges must be a non-negative integer, got ${numMerges}`);
  }
  const vocab: Record<string, number> = {};
  let next = 0;
  for (const s of OPT_SPECIALS) vocab[s] = next++;
  const symbols = [...BYTE_TO_UNICODE].sort((a, b) => a.codePointAt(0)! - b.codePointAt(0)!);
  for (const s of symbols) vocab[s] = next++;

  const merges = trainMerges(corpus, numMerges, new Set(Object.keys(vocab)));
  for (const m of merges) vocab[m.replace(" ", "")] = next++;

  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: OPT_SPECIALS.map((s, i) => addedToken(i, s)),
    normalizer: null,
    pre_tokenizer: byteLevel(false),
    post_processor: prependBosTemplate("</s>", 2),
    decoder: byteLevel(true),
    model: bpeModel(vocab, merges),
  };
}
