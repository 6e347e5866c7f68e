/**
 * Option checking shared by the library's public methods: unknown keys and
 * wrong types throw an Error naming the option and what was expected.
 */

/**
 * A value as the caller gave it, for error messages: numbers as JavaScript
 * prints them (NaN, Infinity, -1e-9), strings quoted, objects as JSON.
 *
 * @example
 * show(NaN); // "NaN" (JSON.stringify would say null)
 */
export function show(v: unknown): string {
  if (typeof v === "number" || typeof v === "bigint" || typeof v === "boolean" || v === undefined || typeof v === "symbol") return String(v);
  if (typeof v === "function") return "a function";
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}

/** Throws if `opts` has a key outside `allowed`; returns the object (or {}). */
export function checkKeys<T extends object>(where: string, opts: T | undefined, allowed: readonly string[]): T {
  if (opts === undefined || opts === null) return {} as T;
  if (typeof opts !== "object" || Array.isArray(opts)) throw new Error(`${where}: options must be an object`);
  for (const k of Object.keys(opts)) {
    if (!allowed.includes(k)) throw new Error(`${where}: unknown option "${k}" (expected one of: ${allowed.join(", ")})`);
  }
  return opts;
}

/** An integer in [min, max], or the default when undefined. */
export function intOpt(where: string, name: string, v: unknown, min: number, max: number, dflt?: number): number {
  if (v === undefined) {
    if (dflt === undefined) throw new Error(`${where}: option "${name}" is required`);
    return dflt;
  }
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
    throw new Error(`${where}: ${name} must be an integer in ${min}..${max}, got ${show(v)}`);
  }
  return v;
}

/**
 * A finite number in [min, max] — or in (min, max] when `minExclusive` — or
 * the default when undefined.
 */
export function numOpt(where: string, name: string, v: unknown, min: number, max: number, dflt: number, minExclusive = false): number {
  if (v === undefined) return dflt;
  if (typeof v !== "number" || !Number.isFinite(v) || (minExclusive ? v <= min : v < min) || v > max) {
    throw new Error(`${where}: ${name} must be a number in ${minExclusive ? "(" : "["}${min}, ${max}], got ${show(v)}`);
  }
  return v;
}

/** true or false, or the default when undefined. */
export function boolOpt(where: string, name: string, v: unknown, dflt: boolean): boolean {
  if (v === undefined) return dflt;
  if (typeof v !== "boolean") throw new Error(`${where}: ${name} must be true or false, got ${show(v)}`);
  return v;
}

/** One of `choices`, or the default when undefined. */
export function choiceOpt<C extends string>(where: string, name: string, v: unknown, choices: readonly C[], dflt: C): C {
  if (v === undefined) return dflt;
  if (typeof v !== "string" || !(choices as readonly string[]).includes(v)) {
    throw new Error(`${where}: ${name} must be one of ${choices.map((c) => JSON.stringify(c)).join(", ")}, got ${show(v)}`);
  }
  return v as C;
}

/** Token ids: an array of integers in [0, vocab). */
export function checkIds(where: string, name: string, ids: unknown, vocab: number): number[] {
  if (!Array.isArray(ids) && !(ids instanceof Int32Array) && !(ids instanceof Uint32Array)) {
    throw new Error(`${where}: ${name} must be an array of token ids`);
  }
  const out = Array.from(ids as ArrayLike<number>);
  out.forEach((t, i) => {
    if (!Number.isInteger(t) || t < 0 || t >= vocab) {
      throw new Error(`${where}: ${name}[${i}] = ${show(t)} is not a token id in 0..${vocab - 1}`);
    }
  });
  return out;
}
