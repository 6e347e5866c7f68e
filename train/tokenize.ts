#!/usr/bin/env bun
/**
 * The trainer's tokenizer: the library's own (SkipTokenizer, and the model's
 * chat template through lib/text/chat.ts), so a model is trained on exactly the
 * ids `SkipDecoder` feeds it. train/train.py runs this script and reads the
 * token file it writes (train/tokens.py); nothing else tokenises.
 *
 *   bun train/tokenize.ts --model DIR --out FILE --data PATH [--eval-fraction 0.05]
 *   bun train/tokenize.ts --model DIR --out FILE --train-text FILE --heldout-text FILE
 *
 * --model DIR holds the tokenizer files and config.json (its model_type picks
 * the BOS rule, lib/checkpoint/family.ts).
 *
 * `--data PATH`: a .txt file (one document), a .jsonl file (one document per
 * line: {"text": "..."} or {"messages": [{"role", "content"}, ...]}), or a
 * folder holding such files (walked recursively in sorted order; other files
 * are ignored). A text document is [BOS where the model adds one] + text +
 * [EOS]; every token but the BOS is a loss target. A chat document is the
 * model's chat template applied to its messages, tokenised without another
 * BOS (as SkipDecoder.chat does); only the assistant turns are loss targets:
 * for assistant message i, the tokens between the template's text for
 * messages[0..i) with the generation prompt and for messages[0..i] (its
 * content and the template's end-of-turn marker). The template's text for
 * those prefixes must tokenise to prefixes of the whole conversation's ids,
 * else the document is refused by name.
 *
 * Held-out split (--eval-fraction f): document i is held out when
 * floor((i + 1) f) > floor(i f) — every (1/f)-th document, spread over the
 * data. When that picks none (fewer than 1/f documents, e.g. one .txt
 * file), the last f of every document's tokens is held out instead.
 *
 * `--train-text/--heldout-text`: two plain texts (the Brown corpus split of
 * train/corpus.py), each tokenised as one stream without BOS or EOS; the
 * trainer cuts its windows and adds the BOS per window (the layout `skipdecode
 * eval` scores).
 *
 * Token file: "SKDTOK1\n", a little-endian uint64 header length, a JSON
 * header (below), zero padding to a multiple of 8, then per split the ids
 * (uint32 LE) and the loss mask (uint8: 1 = a loss target), at the offsets
 * the header gives from the start of the data.
 *
 *   { "format": "skipdecode-tokens", "version": 1, "kind": "documents" | "text",
 *     "model": DIR, "vocab_size": N, "bos_id": id | null, "adds_bos": bool, "eos_id": id,
 *     "split": "documents" | "tails" | "given", "eval_fraction": f | null,
 *     "sources": [{ "path", "documents", "chat" }],
 *     "train":   { "tokens", "documents", "loss_tokens", "ids_offset", "mask_offset" },
 *     "heldout": { ... the same } }
 */
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { basename, extname, join, relative } from "node:path";
import { parseArgs } from "node:util";
import { type ChatMessage, ChatTemplate, checkMessages } from "../lib/text/chat.ts";
import type { TemplateLimits } from "../lib/text/bounded_template.ts";
import { readModelSpec } from "../lib/checkpoint/config.ts";
import { familyOf } from "../lib/checkpoint/family.ts";
import { SkipTokenizer } from "../lib/checkpoint/tokenizer.ts";

export const MAGIC = "SKDTOK1\n";

/** A problem with the arguments or the data, reported without a stack. */
export class UsageError extends Error {}

/** A growing list of token ids with their loss mask. */
class Tokens {
  ids = new Uint32Array(1 << 16);
  mask = new Uint8Array(1 << 16);
  length = 0;
  documents = 0;

  push(ids: readonly number[], mask: Uint8Array | number): void {
    if (this.length + ids.length > this.ids.length) {
      let n = this.ids.length;
      while (n < this.length + ids.length) n *= 2;
      const a = new Uint32Array(n);
      a.set(this.ids.subarray(0, this.length));
      const m = new Uint8Array(n);
      m.set(this.mask.subarray(0, this.length));
      this.ids = a;
      this.mask = m;
    }
    this.ids.set(ids, this.length);
    if (typeof mask === "number") this.mask.fill(mask, this.length, this.length + ids.length);
    else this.mask.set(mask, this.length);
    this.length += ids.length;
  }

  lossTokens(): number {
    let n = 0;
    for (let i = 0; i < this.length; i++) n += this.mask[i]!;
    return n;
  }
}

/** One document: its ids and loss mask. */
interface Doc {
  ids: number[];
  mask: Uint8Array;
}

/**
 * What rendering one chat document may cost: the library's bounds
 * (lib/text/chat.ts) sized for training data, where a conversation may be
 * longer than any one context (windows are cut after packing).
 */
const CHAT_LIMITS: TemplateLimits = { timeMs: 10_000, maxChars: 1 << 24, maxCharsWhy: "16 Mi characters, the trainer's bound for one chat document" };

/** Tokenises documents the way the library feeds them to the model. */
class DocTokenizer {
  readonly #tok: SkipTokenizer;
  #template: ChatTemplate | null = null;
  readonly #dir: string;

  constructor(tok: SkipTokenizer, dir: string) {
    this.#tok = tok;
    this.#dir = dir;
  }

  text(text: string): Doc {
    const ids = this.#tok.encode(text); // with the BOS exactly where the library adds one
    ids.push(this.#tok.eosId);
    const mask = new Uint8Array(ids.length).fill(1);
    if (this.#tok.addsBos) mask[0] = 0;
    return { ids, mask };
  }

  chat(messages: ChatMessage[], where: string): Doc {
    const tok = this.#tok;
    if (this.#template === null) {
      if (tok.chatTemplate === null) {
        throw new UsageError(`${where}: chat messages, but the model ${this.#dir} has no chat template ` +
          "(no chat_template in tokenizer_config.json or chat_template.jinja)");
      }
      this.#template = new ChatTemplate(tok.chatTemplate, this.#dir);
    }
    const t = this.#template;
    const token = (id: number | null) => (id === null ? "" : (tok.idToToken(id) ?? ""));
    const tokens = { bosToken: token(tok.bosId), eosToken: token(tok.eosId) };
    const render = (msgs: ChatMessage[], gen: boolean) => t.render(msgs, { ...tokens, addGenerationPrompt: gen }, where, CHAT_LIMITS);
    const full = render(messages, false);
    const ids = tok.encode(full, { addBos: false }); // the template writes the BOS itself
    const mask = new Uint8Array(ids.length);
    let assistant = 0;
    for (let i = 0; i < messages.length; i++) {
      if (messages[i]!.role !== "assistant") continue;
      assistant++;
      const before = tok.encode(render(messages.slice(0, i), true), { addBos: false });
      const through = tok.encode(render(messages.slice(0, i + 1), false), { addBos: false });
      for (const [what, p] of [["with the generation prompt", before], ["through it", through]] as const) {
        if (p.length > ids.length || p.some((id, k) => id !== ids[k])) {
          throw new UsageError(`${where}: the chat template's text for the messages before assistant message ${i} ` +
            `(${what}) does not tokenise to a prefix of the whole conversation's ids, so its loss mask cannot be placed`);
        }
      }
      mask.fill(1, before.length, through.length);
    }
    if (assistant === 0) throw new UsageError(`${where}: a chat document needs at least one assistant message (the loss is on assistant turns only)`);
    return { ids, mask };
  }
}

/** The .txt and .jsonl files of --data, sorted. */
function dataFiles(path: string): string[] {
  if (!existsSync(path)) throw new UsageError(`--data ${path}: no such file or folder`);
  const kind = (p: string) => extname(p).toLowerCase();
  if (statSync(path).isFile()) {
    if (kind(path) !== ".txt" && kind(path) !== ".jsonl") {
      throw new UsageError(`--data ${path}: takes a .txt file, a .jsonl file or a folder of them`);
    }
    return [path];
  }
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir).sort()) {
      if (name.startsWith(".")) continue;
      const p = join(dir, name);
      const st = statSync(p);
      if (st.isDirectory()) walk(p);
      else if (st.isFile() && (kind(p) === ".txt" || kind(p) === ".jsonl")) out.push(p);
    }
  };
  walk(path);
  if (out.length === 0) throw new UsageError(`--data ${path}: the folder holds no .txt or .jsonl file`);
  return out;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

function readText(path: string): string {
  const bytes = readFileSync(path);
  try {
    return utf8.decode(bytes);
  } catch {
    throw new UsageError(`${path}: not UTF-8 text`);
  }
}

/** Every document of one file, in order. */
function* documents(path: string, dt: DocTokenizer, chats: { n: number }): Generator<Doc> {
  const text = readText(path);
  if (extname(path).toLowerCase() === ".txt") {
    if (text.length > 0) yield dt.text(text);
    return;
  }
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === "") continue;
    const where = `${path}:${i + 1}`;
    let o: unknown;
    try {
      o = JSON.parse(line);
    } catch (e) {
      throw new UsageError(`${where}: not a JSON object (${(e as Error).message})`);
    }
    if (typeof o !== "object" || o === null || Array.isArray(o)) throw new UsageError(`${where}: not a JSON object`);
    const r = o as Record<string, unknown>;
    if ("text" in r && "messages" in r) throw new UsageError(`${where}: has both "text" and "messages"; give one`);
    if ("text" in r) {
      if (typeof r.text !== "string") throw new UsageError(`${where}: "text" must be a string, got ${JSON.stringify(r.text)?.slice(0, 40)}`);
      if (r.text.length > 0) yield dt.text(r.text);
    } else if ("messages" in r) {
      let msgs: ChatMessage[];
      try {
        msgs = checkMessages(where, r.messages);
      } catch (e) {
        throw new UsageError((e as Error).message);
      }
      chats.n++;
      yield dt.chat(msgs, where);
    } else {
      throw new UsageError(`${where}: needs a "text" string or a "messages" list`);
    }
  }
}

interface SplitInfo {
  tokens: number;
  documents: number;
  loss_tokens: number;
  ids_offset: number;
  mask_offset: number;
}

function writeTokenFile(out: string, header: Record<string, unknown>, train: Tokens, held: Tokens): void {
  const align8 = (n: number) => Math.ceil(n / 8) * 8;
  const splits: [string, Tokens][] = [["train", train], ["heldout", held]];
  let off = 0;
  const info: Record<string, SplitInfo> = {};
  for (const [name, t] of splits) {
    const idsOff = off;
    off = align8(off + t.length * 4);
    info[name] = { tokens: t.length, documents: t.documents, loss_tokens: t.lossTokens(), ids_offset: idsOff, mask_offset: off };
    off = align8(off + t.length);
  }
  const json = Buffer.from(JSON.stringify({ ...header, ...info }));
  const headLen = align8(json.length);
  const buf = Buffer.alloc(8 + 8 + headLen + off);
  buf.write(MAGIC, 0, "latin1");
  buf.writeBigUInt64LE(BigInt(headLen), 8);
  json.copy(buf, 16);
  buf.fill(0x20, 16 + json.length, 16 + headLen); // JSON may end in spaces
  const base = 16 + headLen;
  for (const [name, t] of splits) {
    const s = info[name]!;
    Buffer.from(t.ids.buffer, t.ids.byteOffset, t.length * 4).copy(buf, base + s.ids_offset);
    Buffer.from(t.mask.buffer, t.mask.byteOffset, t.length).copy(buf, base + s.mask_offset);
  }
  writeFileSync(out, buf);
}

/**
 * Writes the token file the arguments ask for (module comment); throws
 * UsageError naming what is wrong with the arguments, the model or the data.
 *
 * @example
 * await tokenizeCommand(["--model", "m", "--out", "m.tok", "--data", "chats.jsonl"]);
 */
export async function tokenizeCommand(argv: string[]): Promise<void> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        model: { type: "string" },
        out: { type: "string" },
        data: { type: "string" },
        "eval-fraction": { type: "string" },
        "train-text": { type: "string" },
        "heldout-text": { type: "string" },
      },
      strict: true,
    }));
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const { model, out } = values;
  if (!model || !out) throw new UsageError("--model DIR and --out FILE are required");
  const textMode = values["train-text"] !== undefined || values["heldout-text"] !== undefined;
  if (textMode === (values.data !== undefined)) throw new UsageError("give --data PATH, or --train-text FILE and --heldout-text FILE");
  if (textMode && (!values["train-text"] || !values["heldout-text"])) throw new UsageError("--train-text and --heldout-text go together");
  const fraction = values["eval-fraction"] === undefined ? 0.05 : Number(values["eval-fraction"]);
  if (!(fraction > 0 && fraction <= 0.5)) throw new UsageError(`--eval-fraction must be in (0, 0.5], got ${values["eval-fraction"]}`);

  let spec, tok;
  try {
    spec = readModelSpec(model);
    tok = await SkipTokenizer.load(model, { bos: familyOf(spec.arch, model).bos });
  } catch (e) {
    throw new UsageError(`--model ${model}: ${(e as Error).message}`);
  }
  if (tok.vocabSize > spec.vocabSize) {
    throw new UsageError(`--model ${model}: the tokenizer has ${tok.vocabSize} ids but config.json's vocab_size is ${spec.vocabSize}`);
  }
  const train = new Tokens();
  const held = new Tokens();
  const header: Record<string, unknown> = {
    format: "skipdecode-tokens", version: 1, model, vocab_size: spec.vocabSize,
    bos_id: tok.bosId, adds_bos: tok.addsBos, eos_id: tok.eosId,
  };
  const t0 = performance.now();
  if (textMode) {
    for (const [t, file] of [[train, values["train-text"]!], [held, values["heldout-text"]!]] as const) {
      if (!existsSync(file)) throw new UsageError(`${file}: no such file`);
      t.push(tok.encode(readText(file), { addBos: false }), 1);
      t.documents = 1;
    }
    Object.assign(header, { kind: "text", split: "given", eval_fraction: null, sources: [values["train-text"], values["heldout-text"]].map((p) => ({ path: p, documents: 1, chat: 0 })) });
  } else {
    const dt = new DocTokenizer(tok, model);
    const docs: Doc[] = [];
    const sources = [];
    let last = t0;
    for (const file of dataFiles(values.data!)) {
      const chats = { n: 0 };
      const before = docs.length;
      for (const d of documents(file, dt, chats)) {
        docs.push(d);
        if (performance.now() - last > 10_000) {
          last = performance.now();
          console.error(`tokenize: ${docs.length} documents, ${relative(process.cwd(), file) || basename(file)} ...`);
        }
      }
      sources.push({ path: file, documents: docs.length - before, chat: chats.n });
    }
    if (docs.length === 0) throw new UsageError(`--data ${values.data}: no documents (every file or line is empty)`);
    const held_ = (i: number) => Math.floor((i + 1) * fraction) > Math.floor(i * fraction);
    const byDocs = docs.some((_, i) => held_(i));
    for (const [i, d] of docs.entries()) {
      if (byDocs) {
        const t = held_(i) ? held : train;
        t.push(d.ids, d.mask);
        t.documents++;
      } else {
        const cut = d.ids.length - Math.round(d.ids.length * fraction);
        train.push(d.ids.slice(0, cut), d.mask.subarray(0, cut));
        held.push(d.ids.slice(cut), d.mask.subarray(cut));
        train.documents++;
        held.documents++;
      }
    }
    Object.assign(header, { kind: "documents", split: byDocs ? "documents" : "tails", eval_fraction: fraction, sources });
  }
  for (const [name, t] of [["training", train], ["held-out", held]] as const) {
    if (t.lossTokens() === 0) throw new UsageError(`the ${name} split has no loss tokens (${t.length} tokens): give more data or change --eval-fraction`);
  }
  writeTokenFile(out, header, train, held);
  console.error(
    `tokenize: ${train.length} train tokens (${train.documents} documents), ${held.length} held out ` +
      `(${held.documents}) in ${((performance.now() - t0) / 1000).toFixed(1)} s -> ${out}`,
  );
}

if (import.meta.main) {
  try {
    await tokenizeCommand(Bun.argv.slice(2));
  } catch (e) {
    console.error(`tokenize.ts: ${(e as Error).message}`);
    process.exit(e instanceof UsageError ? 2 : 1);
  }
}
