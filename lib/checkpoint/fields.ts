/**
 * Typed reads of `config.json` fields with errors that name the file and the
 * field. Shared by the family modules (opt.ts, llama.ts).
 */
import { join } from "node:path";

/** Throws `<dir>/config.json: <msg>`. */
export function configFail(dir: string, msg: string): never {
  throw new Error(`${join(dir, "config.json")}: ${msg}`);
}

export type Config = Record<string, unknown>;

/** The largest size any engine accepts in a shape field (skipdecode.h: every config slot is <= 2^30). */
export const MAX_FIELD = 2 ** 30;

/** An integer in min..MAX_FIELD, or dflt when absent (required when dflt is undefined). */
export function intField(dir: string, cfg: Config, key: string, dflt?: number, min = 1): number {
  const v = cfg[key] ?? dflt;
  if (v === undefined) configFail(dir, `missing required field "${key}"`);
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < min) {
    configFail(dir, `field "${key}" must be an integer >= ${min}, got ${JSON.stringify(v)}`);
  }
  if (v > MAX_FIELD) configFail(dir, `field "${key}" is ${v}; at most ${MAX_FIELD} (2^30) is supported`);
  return v;
}

/** A finite number > 0, or dflt when absent. */
export function posField(dir: string, cfg: Config, key: string, dflt: number): number {
  const v = cfg[key] ?? dflt;
  if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
    configFail(dir, `field "${key}" must be a number > 0, got ${JSON.stringify(v)}`);
  }
  return v;
}

export function boolField(dir: string, cfg: Config, key: string, dflt: boolean): boolean {
  const v = cfg[key] ?? dflt;
  if (typeof v !== "boolean") configFail(dir, `field "${key}" must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

/** Token ids: an integer or a non-empty list of integers (Llama 3 lists several EOS ids). */
export function idsField(dir: string, cfg: Config, key: string, dflt: number[]): number[] {
  const v = cfg[key];
  if (v === undefined || v === null) return dflt;
  const list = Array.isArray(v) ? v : [v];
  if (list.length === 0 || list.some((x) => typeof x !== "number" || !Number.isSafeInteger(x) || x < 0)) {
    configFail(dir, `field "${key}" must be a token id or a list of them, got ${JSON.stringify(v)}`);
  }
  return list as number[];
}
