/**
 * A Jinja renderer with limits: @huggingface/jinja's own interpreter, run
 * under a time limit, an output limit and a work limit, so a chat template —
 * a file from the model folder, fed by request messages — can neither loop
 * forever nor grow a string or a list until the process runs out of memory.
 *
 * How, without forking the interpreter:
 * - Every node the interpreter evaluates passes through {@link BoundedTemplate}'s
 *   hook (the interpreter calls `this.evaluate` for every node). The hook
 *   checks the clock every 16 nodes, and charges every value a node
 *   *creates* (literals, operators, filters, calls, slices — not a mere
 *   reference to an existing value) to the work budget: a string its length,
 *   a list or a mapping {@link ELEMENT_UNITS} per entry. Building a value
 *   larger than what is left fails before anything else is built from it,
 *   so memory stays within a small multiple of the budget.
 * - The few operations whose result can dwarf their inputs in one step are
 *   sized *before* they run: `range()` (our own, charged before it
 *   allocates), the `join`, `replace`, `indent`, `tojson` and `string`
 *   filters, `str.replace()` and `str.split()`, slicing a string, and turning
 *   a list into text (a patched `ArrayValue.toString`, consulted only while a
 *   bounded render is running). A nested structure that shares parts (`[a, a]`
 *   of `[b, b]` …) is measured by walking it, stopping as soon as it exceeds
 *   what is left.
 * - The output must fit {@link TemplateLimits.maxChars}.
 *
 * A template's own errors stay plain Errors; exceeding a limit throws a
 * {@link TemplateLimitError} naming the limit. Sources larger than
 * {@link MAX_TEMPLATE_BYTES} are refused before parsing.
 */
import { Environment, Interpreter, Template } from "@huggingface/jinja";

/** Largest chat template source accepted (UTF-8 bytes); real ones are a few KiB. */
export const MAX_TEMPLATE_BYTES = 256 << 10;
/** Work units a list or mapping entry costs (a string costs its length). */
export const ELEMENT_UNITS = 32;
/** The work budget is this many times the output limit. */
export const WORK_FACTOR = 64;

/** What one render may spend. */
export interface TemplateLimits {
  /** Wall-clock time, ms. */
  timeMs: number;
  /** Longest output, in characters (UTF-16 code units). */
  maxChars: number;
  /** Says where maxChars comes from, for messages ("8 × the context of 2048 tokens"). */
  maxCharsWhy?: string;
}

/** Which limit a render exceeded. */
export type TemplateLimit = "time" | "output" | "work";

/** A render stopped at a limit; the message names it. */
export class TemplateLimitError extends Error {
  readonly limit: TemplateLimit;
  constructor(limit: TemplateLimit, message: string) {
    super(message);
    this.name = "TemplateLimitError";
    this.limit = limit;
  }
}

// The interpreter's value classes are not exported; these are the shapes the hooks read.
type Value = { type: string; value: any; toString(): string };
type Node = { type: string; [k: string]: any };

const EVALUATED = "BoundedTemplate.Evaluated";
/** A node standing for a value evaluated already, so the interpreter does not evaluate its arguments twice. */
const done = (value: Value): Node => ({ type: EVALUATED, value });

const isList = (v: Value) => v.type === "ArrayValue" || v.type === "TupleValue";
const isMap = (v: Value) => v.type === "ObjectValue" || v.type === "NamespaceValue" || v.type === "KeywordArgumentsValue";
/** Nodes whose value already exists elsewhere: not charged again. */
const REFERENCES = new Set(["Identifier", "Ternary", "SelectExpression", "TestExpression", "UnaryExpression", "Comment", EVALUATED]);

/** Nodes after which the clock is read every time. */
const CALLS = new Set(["CallExpression", "FilterExpression", "FilterStatement", "Program"]);
/** Statements whose text goes to the output (a `{% set %}` block aside). */
const BLOCKS = new Set(["Program", "For", "If"]);

/** Work units of a value the node created. */
function units(v: Value): number {
  if (v.type === "StringValue") return v.value.length;
  if (isList(v)) return ELEMENT_UNITS * v.value.length;
  if (isMap(v)) return ELEMENT_UNITS * v.value.size;
  return 1;
}

/** Occurrences of `needle` in `s` (`needle` "" occurs s.length + 1 times). */
function occurrences(s: string, needle: string): number {
  if (needle === "") return s.length + 1;
  let n = 0;
  for (let at = s.indexOf(needle); at >= 0; at = s.indexOf(needle, at + needle.length)) n++;
  return n;
}

/** An upper bound on JSON.stringify(s).length: 2 + length + 5 per character that may be escaped. */
function quotedSize(s: string, ascii: boolean): number {
  let n = s.length + 2;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x22 || c === 0x5c || (ascii && c > 0x7e)) n += 5;
  }
  return n;
}

interface JsonShape {
  indent: number;
  itemSep: number;
  keySep: number;
  ascii: boolean;
}

/**
 * An upper bound on the length of the interpreter's toJSON(v) with `shape`,
 * or anything above `limit` as soon as it is clearly above it (so the walk
 * costs at most about `limit` steps).
 */
function jsonSize(v: Value, shape: JsonShape, depth: number, limit: number): number {
  if (v.type === "StringValue") return quotedSize(v.value, shape.ascii);
  if (!isList(v) && !isMap(v)) return 32;
  const pad = shape.indent ? 1 + shape.indent * (depth + 1) : 0;
  let n = 2 + (shape.indent ? 1 + shape.indent * depth : 0);
  const add = (child: Value, key?: string) => {
    n += pad + shape.itemSep + 1 + jsonSize(child, shape, depth + 1, limit - n);
    if (key !== undefined) n += quotedSize(key, shape.ascii) + shape.keySep;
  };
  if (isList(v)) {
    for (const c of v.value as Value[]) {
      add(c);
      if (n > limit) return n;
    }
  } else {
    for (const [k, c] of v.value as Map<string, Value>) {
      add(c, k);
      if (n > limit) return n;
    }
  }
  return n;
}

/** The length of String(v) as the interpreter writes values into text, bounded like {@link jsonSize}. */
function textSize(v: Value, limit: number): number {
  if (v.type === "StringValue") return v.value.length;
  if (isList(v)) return jsonSize(v, { indent: 0, itemSep: 2, keySep: 2, ascii: false }, 0, limit);
  return 32; // numbers, booleans, none, "[object Map]"
}

/** One render's spending. */
class Budget {
  work = 0;
  steps = 0;
  readonly deadline: number;
  readonly maxWork: number;
  constructor(readonly limits: TemplateLimits) {
    this.deadline = performance.now() + limits.timeMs;
    this.maxWork = WORK_FACTOR * limits.maxChars;
  }

  /** Counts a node; every 16th (and every `always`) looks at the clock. */
  tick(always = false): void {
    if (((++this.steps & 15) === 0 || always) && performance.now() > this.deadline) {
      throw new TemplateLimitError("time", `the chat template ran longer than ${this.limits.timeMs} ms (the time limit)`);
    }
  }

  /** Takes `n` units, or throws the work limit. */
  charge(n: number): void {
    this.work += n;
    if (this.work > this.maxWork) {
      throw new TemplateLimitError(
        "work",
        `the chat template built more than ${this.maxWork} characters (or ${ELEMENT_UNITS} per list entry) of values ` +
          `(the work limit, ${WORK_FACTOR} × the output limit)`,
      );
    }
  }

  get room(): number {
    return this.maxWork - this.work;
  }

  /** A block's text is part of the output: longer than the output limit, it fails as that. */
  output(chars: number): void {
    if (chars > this.limits.maxChars) {
      const why = this.limits.maxCharsWhy ? `, ${this.limits.maxCharsWhy}` : "";
      throw new TemplateLimitError("output", `the chat template's output is ${chars} characters or more, more than the output limit of ${this.limits.maxChars}${why}`);
    }
  }
}

/** The budget of the render running now (renders are synchronous: at most one at a time). */
let active: Budget | null = null;

/** ArrayValue.toString (the interpreter's list → text) measured first while a bounded render runs. */
function patchListText(): void {
  const env = new Environment();
  const list = new Interpreter(env).evaluate({ type: "ArrayLiteral", value: [] } as never, env) as unknown as Value;
  const proto = Object.getPrototypeOf(list) as { toString(): string; __bounded?: boolean };
  if (proto.__bounded) return;
  const toText = proto.toString;
  proto.toString = function (this: Value): string {
    if (active) active.charge(textSize(this, active.room + 1));
    return toText.call(this);
  };
  proto.__bounded = true;
}
patchListText();

const MONTHS_LONG = new Intl.DateTimeFormat(undefined, { month: "long" });
const MONTHS_SHORT = new Intl.DateTimeFormat(undefined, { month: "short" });
/** `strftime_now(format)`, as @huggingface/jinja's global gives it (%Y %m %d %b %B %H %M %%). */
function strftimeNow(format: string): string {
  const d = new Date();
  const pad = (n: number) => String(n).padStart(2, "0");
  const fields: Record<string, string> = {
    "%Y": String(d.getFullYear()),
    "%m": pad(d.getMonth() + 1),
    "%d": pad(d.getDate()),
    "%b": MONTHS_SHORT.format(d),
    "%B": MONTHS_LONG.format(d),
    "%H": pad(d.getHours()),
    "%M": pad(d.getMinutes()),
    "%%": "%",
  };
  return String(format).replace(/%[YmdbBHM%]/g, (t) => fields[t]!);
}

/**
 * A parsed Jinja template rendered under {@link TemplateLimits}.
 *
 * @example
 * const t = new BoundedTemplate("{% for m in messages %}{{ m.content }}{% endfor %}");
 * t.render({ messages: [{ role: "user", content: "Hi" }] }, { timeMs: 1000, maxChars: 65536 }); // "Hi"
 */
export class BoundedTemplate {
  readonly #program: unknown;

  /** Parses `source`; throws the parser's error, or a size error above {@link MAX_TEMPLATE_BYTES}. */
  constructor(source: string) {
    const bytes = Buffer.byteLength(source);
    if (bytes > MAX_TEMPLATE_BYTES) throw new Error(`the template is ${bytes} bytes; at most ${MAX_TEMPLATE_BYTES} are accepted`);
    this.#program = new Template(source).parsed;
  }

  /** Renders with `items` as the template's variables; throws TemplateLimitError at a limit. */
  render(items: Record<string, unknown>, limits: TemplateLimits): string {
    const budget = new Budget(limits);
    const env = new Environment();
    // the globals @huggingface/jinja sets up, with a range() that pays before it allocates
    const globals: Record<string, unknown> = {
      false: false,
      true: true,
      none: null,
      False: false,
      True: true,
      None: null,
      raise_exception: (msg: string) => {
        throw new Error(msg);
      },
      strftime_now: strftimeNow,
      range: (start: number, stop?: number, step = 1) => {
        if (stop === undefined) [start, stop] = [0, start];
        for (const x of [start, stop, step]) if (typeof x !== "number" || !Number.isFinite(x)) throw new Error("range() arguments must be numbers");
        if (step === 0) throw new Error("range() step must not be zero");
        const n = Math.max(0, Math.ceil((stop - start) / step));
        budget.charge(ELEMENT_UNITS * n);
        return Array.from({ length: n }, (_, i) => start + i * step);
      },
    };
    for (const [k, v] of Object.entries({ ...globals, ...items })) env.set(k, v);
    const interp = new Interpreter(env);
    hook(interp, budget);
    const outer = active;
    active = budget;
    let out: string;
    try {
      out = (interp.run(this.#program as never) as unknown as Value).value as string;
    } finally {
      active = outer;
    }
    budget.output(out.length);
    return out;
  }
}

/** Installs the budget's hooks on one interpreter (own properties shadow its methods; it calls them through `this`). */
function hook(interp: Interpreter, budget: Budget): void {
  const self = interp as unknown as Record<string, (...a: any[]) => any>;
  const base = Interpreter.prototype as unknown as Record<string, (...a: any[]) => any>;
  const evaluate = (node: Node, env: Environment): Value => self.evaluate!.call(interp, node, env);
  const evalArgs = (args: Node[], env: Environment): Node[] => {
    const [pos, kw] = base.evaluateArguments!.call(interp, args, env) as [Value[], Map<string, Value>];
    const out: Node[] = pos.map(done);
    for (const [k, v] of kw) out.push({ type: "KeywordArgumentExpression", key: { type: "Identifier", value: k }, value: done(v) });
    return out;
  };
  const arg = (args: Node[], i: number, key: string): Value | undefined => {
    const kw = args.find((a) => a.type === "KeywordArgumentExpression" && a.key.value === key);
    return kw ? kw.value.value : args[i]?.type === EVALUATED ? args[i]!.value : undefined;
  };

  self.evaluate = (node: Node, env: Environment): Value => {
    if (node?.type === EVALUATED) return node.value;
    budget.tick();
    if (node?.type === "MemberExpression" && node.property?.type === "SliceExpression") {
      // slicing a string spreads it into characters first
      const obj = evaluate(node.object, env);
      if (obj.type === "StringValue") budget.charge(ELEMENT_UNITS * obj.value.length);
      node = { ...node, object: done(obj) };
    }
    const v = base.evaluate!.call(interp, node, env) as Value;
    if (node && CALLS.has(node.type)) budget.tick(true); // one call or filter can take long by itself
    if (node && !REFERENCES.has(node.type) && !(node.type === "MemberExpression" && node.property?.type !== "SliceExpression")) {
      if (BLOCKS.has(node.type) && v.type === "StringValue") budget.output(v.value.length);
      budget.charge(units(v));
    }
    return v;
  };

  self.evaluateCallExpression = (expr: Node, env: Environment): Value => {
    const callee = expr.callee as Node;
    const method = callee.type === "MemberExpression" && !callee.computed ? (callee.property.value as string) : null;
    if (method !== "replace" && method !== "split") return base.evaluateCallExpression!.call(interp, expr, env);
    const obj = evaluate(callee.object, env);
    const args = evalArgs(expr.args, env);
    if (obj.type === "StringValue") {
      const s = obj.value as string;
      if (method === "replace") sizeReplace(s, args[0]?.value, args[1]?.value, budget);
      else {
        const sep = args[0]?.value;
        budget.charge(ELEMENT_UNITS * (sep?.type === "StringValue" && sep.value ? occurrences(s, sep.value) + 1 : s.length / 2 + 1));
      }
    }
    return base.evaluateCallExpression!.call(interp, { ...expr, callee: { ...callee, object: done(obj) }, args }, env);
  };

  self.applyFilter = (operand: Value, filter: Node, env: Environment): Value => {
    const call = filter.type === "CallExpression";
    const name = (call ? filter.callee.value : filter.value) as string;
    const args = call ? evalArgs(filter.args, env) : [];
    const node = call ? { ...filter, args } : filter;
    const room = budget.room + 1;
    switch (name) {
      case "tojson":
      case "string":
        if (isList(operand) || isMap(operand)) {
          const indent = arg(args, -1, "indent")?.value ?? 0;
          const seps = arg(args, -1, "separators")?.value as Value[] | undefined;
          const ascii = arg(args, -1, "ensure_ascii")?.value === true;
          if (typeof indent === "number" && indent > room) budget.charge(indent);
          const shape = {
            indent: typeof indent === "number" ? indent : 0,
            itemSep: seps?.[0]?.value?.length ?? 2,
            keySep: seps?.[1]?.value?.length ?? 2,
            ascii,
          };
          budget.charge(jsonSize(operand, shape, 0, room));
        }
        break;
      case "join":
        if (isList(operand)) {
          const sep = arg(args, 0, "separator")?.value ?? "";
          let n = Math.max(0, operand.value.length - 1) * (typeof sep === "string" ? sep.length : 0);
          for (const x of operand.value as Value[]) {
            n += textSize(x, room - n);
            if (n > room) break;
          }
          budget.charge(n);
        } else if (operand.type === "StringValue") {
          budget.charge(ELEMENT_UNITS * operand.value.length); // spread into characters first
        }
        break;
      case "indent":
        if (operand.type === "StringValue") {
          const width = arg(args, 0, "width")?.value ?? 4;
          const lines = occurrences(operand.value, "\n") + 1;
          budget.charge(operand.value.length + lines * (typeof width === "number" ? Math.max(0, width) : String(width).length));
        }
        break;
      case "replace":
        if (operand.type === "StringValue") sizeReplace(operand.value, args[0]?.value, args[1]?.value, budget);
        break;
    }
    return base.applyFilter!.call(interp, operand, node, env);
  };
}

/** Sizes `s.replace(old, new)` before it runs. */
function sizeReplace(s: string, from: Value | undefined, to: Value | undefined, budget: Budget): void {
  if (from?.type !== "StringValue" || to?.type !== "StringValue") return; // the interpreter refuses these itself
  const grow = to.value.length - from.value.length;
  if (grow > 0) budget.charge(s.length + occurrences(s, from.value) * grow);
}
