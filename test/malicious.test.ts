/**
 * A corpus of malicious and broken model folders, generated here from a good
 * tiny model: bad tokenizer.json and vocab.json variants, bad chat templates,
 * absurd config sizes, a safetensors header with a BOM. Each is refused at
 * load with a message that names what is wrong, quickly, and without a huge
 * allocation; none loads silently to tokenise garbage later.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { copyFileSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { SkipTokenizer } from "../lib/checkpoint/tokenizer.ts";
import { buildStyledTokenizer } from "../lib/tiny/tokenizers.ts";
import { SkipDecoder } from "../lib/index.ts";
import { cleanupTemp, tempDir, tinyModel } from "./helpers.ts";

afterAll(cleanupTemp);

type Json = Record<string, any>;

const OPT = tinyModel({ seed: 31, layers: 1, hidden: 32, heads: 2 });
const LLAMA = tinyModel({ family: "llama", seed: 32, layers: 1 });

/** A copy of a model folder with its tokenizer.json (and more files) edited. */
function variant(src: string, edit: { tokenizer?: (t: Json) => void; config?: (c: Json) => void; files?: Record<string, string> }): string {
  const dir = tempDir("skd-evil-");
  for (const f of ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"]) {
    try {
      copyFileSync(join(src, f), join(dir, f));
    } catch {
      // not every family writes every file
    }
  }
  if (edit.tokenizer) {
    const t = JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8"));
    edit.tokenizer(t);
    writeFileSync(join(dir, "tokenizer.json"), JSON.stringify(t));
  }
  if (edit.config) {
    const c = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
    edit.config(c);
    writeFileSync(join(dir, "config.json"), JSON.stringify(c));
  }
  for (const [name, text] of Object.entries(edit.files ?? {})) writeFileSync(join(dir, name), text);
  return dir;
}

/** Loading `dir` fails with `pattern` in well under a second. */
async function refused(dir: string, pattern: RegExp, load: (d: string) => Promise<unknown> = (d) => SkipTokenizer.load(d)): Promise<void> {
  const t0 = performance.now();
  const err = await load(dir).then(
    () => null,
    (e: Error) => e,
  );
  expect(err?.message ?? "loaded").toMatch(pattern);
  expect(performance.now() - t0).toBeLessThan(2000);
}

describe("malicious tokenizer.json", () => {
  const firstToken = (t: Json) => Object.keys(t.model.vocab)[10]!;
  const cases: [string, (t: Json) => void, RegExp][] = [
    ["one huge id", (t) => (t.model.vocab.EVIL = 1e12), /token "EVIL" has id 1000000000000; ids must be integers in 0\.\.\d+/],
    ["a 2e9 id", (t) => (t.model.vocab[firstToken(t)] = 2e9), /has id 2000000000/],
    ["a negative id", (t) => (t.model.vocab[firstToken(t)] = -1), /has id -1/],
    ["a float id", (t) => (t.model.vocab[firstToken(t)] = 5.5), /has id 5\.5/],
    ["a string id", (t) => (t.model.vocab[firstToken(t)] = "7"), /has id "7"/],
    ["a duplicate id", (t) => (t.model.vocab.DUP = t.model.vocab[firstToken(t)]), /id \d+ is given to both/],
    ["an empty vocabulary", (t) => ((t.model.vocab = {}), (t.model.merges = []), (t.added_tokens = [])), /model\.vocab is empty/],
    ["no vocabulary", (t) => delete t.model.vocab, /has no model\.vocab/],
    ["an unknown model type", (t) => (t.model.type = "Evil"), /model\.type "Evil" is not supported \(supported: BPE, WordPiece, Unigram\)/],
    ["a missing model type", (t) => delete t.model.type, /model\.type undefined is not supported/],
    ["an unknown pre-tokenizer", (t) => (t.pre_tokenizer = { type: "Shred" }), /pre_tokenizer\.type "Shred" is not supported/],
    ["an unknown normalizer in a Sequence", (t) => (t.normalizer = { type: "Sequence", normalizers: [{ type: "NFC" }, { type: "Rot13" }] }), /normalizer\.normalizers\[1\]\.type "Rot13"/],
    ["an unknown decoder", (t) => (t.decoder = { type: "Unzip" }), /decoder\.type "Unzip" is not supported/],
    ["an unknown post-processor", (t) => (t.post_processor = { type: "Append" }), /post_processor\.type "Append" is not supported/],
    [
      "a post-processor naming an unknown token",
      (t) => (t.post_processor.special_tokens["</s>"].tokens = ["<nope>"]),
      /post_processor\.special_tokens\["<\/s>"\] names token "<nope>", which is not in the vocabulary/,
    ],
    ["a post-processor with the wrong id", (t) => (t.post_processor.special_tokens["</s>"].ids = [7]), /gives "<\/s>" the id 7; the vocabulary gives it 2/],
    ["a template naming an undefined special", (t) => (t.post_processor.single[0].SpecialToken.id = "<bos>"), /uses the special token "<bos>", which special_tokens does not define/],
    ["an added token with a huge id", (t) => t.added_tokens.push({ ...t.added_tokens[0], id: 1e12, content: "<big>" }), /added_tokens\[4\] \("<big>"\) has id 1000000000000/],
    ["two added tokens with one id", (t) => t.added_tokens.push({ ...t.added_tokens[0], content: "<twin>" }), /added_tokens: id 0 is given twice/],
    ["an added token taking another token's id", (t) => (t.added_tokens[2].content = "<eos>"), /added_tokens\[2\] "<eos>" has id 2, which model\.vocab gives to "<\/s>"/],
    ["an added token without content", (t) => (t.added_tokens[0].content = ""), /added_tokens\[0\] needs a non-empty string content/],
    ["a merge of unknown tokens", (t) => t.model.merges.push("Q zzz"), /model\.merges\[\d+\] "Q zzz": token "zzz" is not in model\.vocab/],
    ["a malformed merge", (t) => t.model.merges.push(42), /model\.merges\[\d+\] must be "left right"/],
    ["an unknown unk_token", (t) => (t.model.unk_token = "<unk?>"), /model\.unk_token "<unk\?>" is not in model\.vocab/],
  ];
  for (const [name, edit, pattern] of cases) {
    test(name, async () => {
      await refused(variant(OPT, { tokenizer: edit }), pattern);
    });
  }

  test("vocab.json: a huge, a duplicate or an out-of-range id", async () => {
    const merges = "#version: 0.2\nĠ t\n";
    const vocab = { "Ġ": 0, t: 1, "Ġt": 2, "</s>": 3 };
    for (const [v, pattern] of [
      [{ ...vocab, EVIL: 1e12 }, /token "EVIL" has id 1000000000000 \(ids are 0\.\.4\)/],
      [{ ...vocab, "</s>": 1 }, /id 1 is given to both "t" and "<\/s>"/],
      [{ ...vocab, "</s>": 9 }, /token "<\/s>" has id 9 \(ids are 0\.\.3\)/],
    ] as const) {
      const dir = tempDir("skd-evil-");
      writeFileSync(join(dir, "vocab.json"), JSON.stringify(v));
      writeFileSync(join(dir, "merges.txt"), merges);
      await refused(dir, pattern);
    }
  });

  test("a tokenizer with ids beyond the model's vocabulary is refused by the decoder", async () => {
    const dir = variant(OPT, { config: (c) => (c.vocab_size = 100) });
    await refused(dir, /has ids up to \d+, beyond the model's vocabulary of 100/, (d) => SkipDecoder.load(d, { backend: "cpu" }));
  });

  test("the good styles still load: Unigram-free byte-level and SentencePiece files pass the checks", async () => {
    for (const style of ["llama3", "qwen2", "sentencepiece"] as const) {
      const t = buildStyledTokenizer(style, 50);
      const dir = tempDir("skd-good-");
      writeFileSync(join(dir, "tokenizer.json"), JSON.stringify(t.json));
      writeFileSync(join(dir, "tokenizer_config.json"), JSON.stringify(t.config));
      const tok = await SkipTokenizer.load(dir, { bos: "config" });
      expect(tok.vocabSize).toBe(t.size);
      expect(tok.maxTokenBytes).toBeGreaterThan(1);
    }
    const llama = await SkipTokenizer.load(LLAMA, { bos: "config" });
    expect(llama.vocabSize).toBeGreaterThan(256);
  });
});

describe("malicious chat templates", () => {
  test("a template that does not parse is refused at load with the parser's error", async () => {
    const dir = variant(LLAMA, { files: { "chat_template.jinja": "{% for m in messages %}{{ m.content }" } });
    await refused(dir, /chat_template\.jinja: the model's chat_template does not parse: .+/, (d) => SkipTokenizer.load(d, { bos: "config" }));
    await refused(dir, /chat_template\.jinja: the model's chat_template does not parse/, (d) => SkipDecoder.load(d, { backend: "cpu" }));
    const inConfig = variant(LLAMA, {});
    const cfg = JSON.parse(readFileSync(join(inConfig, "tokenizer_config.json"), "utf8"));
    writeFileSync(join(inConfig, "tokenizer_config.json"), JSON.stringify({ ...cfg, chat_template: "{% if %}" }));
    await refused(inConfig, /tokenizer_config\.json: the model's chat_template does not parse/, (d) => SkipTokenizer.load(d, { bos: "config" }));
  });

  test("a 50 MB template file is refused by its size, unread", async () => {
    const dir = variant(LLAMA, { files: { "chat_template.jinja": "x".repeat(50 << 20) } });
    await refused(dir, /the chat template is 52428800 bytes; at most 262144 are accepted/, (d) => SkipTokenizer.load(d, { bos: "config" }));
  });

  const convo = [{ role: "user", content: "Hello" }];
  const cases: [string, string, RegExp][] = [
    ["a nested loop of 10^10 steps", "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}ok", /work limit/],
    ["loops over a list held in a variable", "{% set r = range(20000) %}{% for a in r %}{% for b in r %}{% endfor %}{% endfor %}ok", /ran longer than 1000 ms \(the time limit\)/],
    ["range(50000000)|join", "{{ range(50000000)|join(',') }}", /work limit/],
    ["string doubling", "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}", /work limit/],
    ["list doubling", "{% set ns = namespace(a=[1]) %}{% for i in range(64) %}{% set ns.a = ns.a + ns.a %}{% endfor %}{{ ns.a|length }}", /work limit/],
    ["tojson(indent=1e8)", "{{ messages|tojson(indent=100000000) }}", /work limit/],
    ["a shared structure serialised", "{% set ns = namespace(a=['xxxxxxxx']) %}{% for i in range(48) %}{% set ns.a = [ns.a, ns.a] %}{% endfor %}{{ ns.a }}", /work limit/],
    ["replace('', big)", "{{ (range(5000)|join('')).replace('', range(5000)|join('')) }}", /work limit/],
    ["indent(1e6)", "{{ (range(20000)|join('\\n'))|indent(1000000) }}", /work limit/],
    ["an output over the limit", "{% for i in range(3000) %}{{ 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' }}{% endfor %}", /output is 90000 characters or more, more than the output limit of 65536/],
    ["endless recursion", "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", /time limit|refused these messages/],
  ];
  for (const [name, template, pattern] of cases) {
    test(`${name}: the render stops at a named limit, the process lives on`, async () => {
      const dir = variant(LLAMA, { files: { "chat_template.jinja": template } });
      using dec = await SkipDecoder.load(dir, { backend: "cpu", maxBatch: 1 });
      const rss = process.memoryUsage().rss;
      const t0 = performance.now();
      expect(() => dec.applyChatTemplate(convo)).toThrow(pattern);
      expect(performance.now() - t0).toBeLessThan(3000);
      expect(process.memoryUsage().rss - rss).toBeLessThan(512 << 20);
    });
  }

  test("the real templates render well within the limits", async () => {
    for (const family of ["llama", "mistral", "qwen2"] as const) {
      using dec = await SkipDecoder.load(tinyModel({ family, seed: 33, layers: 1 }), { backend: "cpu", maxBatch: 1 });
      const long = Array.from({ length: 120 }, (_, i) => ({ role: i % 2 ? "assistant" : "user", content: `message ${i} `.repeat(20) }));
      expect(dec.applyChatTemplate(long).length).toBeGreaterThan(120 * 200);
      // over the message count: refused before rendering, by name
      expect(() => dec.applyChatTemplate([...long, ...long])).toThrow(/240 messages; at most 128 are accepted/);
    }
  });
});

describe("absurd config sizes are refused by name", () => {
  const cases: [string, number, RegExp][] = [
    ["ffn_dim", 2e9, /field "ffn_dim" is 2000000000; at most 1073741824 \(2\^30\) is supported/],
    ["hidden_size", 2 ** 31, /field "hidden_size" is 2147483648/],
    ["vocab_size", 1e12, /field "vocab_size" is 1000000000000/],
    ["num_hidden_layers", 2 ** 30, /out of memory allocating the per-layer weight table \(\d+ MiB/],
  ];
  for (const [field, value, pattern] of cases) {
    test(`${field} = ${value}`, async () => {
      const dir = variant(OPT, { config: (c) => (c[field] = value) });
      await refused(dir, pattern, (d) => SkipDecoder.load(d, { backend: "cpu" }));
    });
  }

  test("a KV cache beyond memory names the buffer", async () => {
    const dir = variant(OPT, { config: (c) => (c.max_position_embeddings = 2 ** 30) });
    await refused(dir, /out of memory allocating the KV cache \(keys\) \(\d+ MiB; the KV cache is \d+ MiB for 8 slots × 1073741824 positions\)/, (d) =>
      SkipDecoder.load(d, { backend: "cpu", maxSeqLen: 2 ** 30 }),
    );
  });
});
