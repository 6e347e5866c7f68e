#!/usr/bin/env bun
/**
 * bench membw — the roofline: memory bandwidth measured by the native
 * library (STREAM-style read and copy, best of --reps passes), for every
 * backend this machine has; and the sustained read rate of 24 passes in a row
 * (bytes over their total time) with the spread of those passes, which is what
 * the other benches' "of membw" columns compare with (bench/common.ts
 * readBandwidth says why).
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { libraryPath, NativeBackend } from "../lib/engine/native.ts";
import { flags, machine, median, pm, range, readBandwidth, ROOT, stddev, table, writeJson } from "./common.ts";

const USAGE = `usage: bun run bench membw [--mib 512] [--threads 0] [--reps 10] [--out bench/results/membw.json]`;
const f = flags(USAGE, {
  mib: { type: "string", default: "512" },
  threads: { type: "string", default: "0" },
  reps: { type: "string", default: "10" },
  out: { type: "string", default: join(ROOT, "bench/results/membw.json") },
  help: { type: "boolean", default: false },
});
const mib = Number(f.mib);
const threads = Number(f.threads);
const reps = Number(f.reps);
if (!Number.isInteger(mib) || mib < 1 || !Number.isInteger(threads) || threads < 0 || !Number.isInteger(reps) || reps < 1) {
  console.error(`--mib, --threads and --reps must be non-negative integers (mib, reps >= 1)\n\n${USAGE}`);
  process.exit(2);
}

/** Measures a backend: `rounds` rounds of skd_membw(best of reps). */
function measure(backend: NativeBackend, bytes: number, threads: number, reps: number, rounds = 5) {
  const read: number[] = [];
  const copy: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const r = backend.membw(bytes, threads, reps);
    read.push(r.readGBs);
    copy.push(r.copyGBs);
  }
  const { sustained, passes } = readBandwidth(backend, threads, 24, bytes);
  return { read, copy, passes, sustained };
}

console.log(`membw: ${machine()}; buffers ${mib} MiB, best of ${reps} passes, 5 rounds\n`);
const rows: (string | number)[][] = [];
const results: Record<string, unknown>[] = [];
for (const name of ["cpu", "cuda"] as const) {
  if (name === "cuda" && !existsSync(libraryPath("cuda"))) continue;
  let b: NativeBackend;
  try {
    b = NativeBackend.get(name);
  } catch (e) {
    rows.push([name, `not loadable: ${(e as Error).message}`, "", "", "", ""]);
    continue;
  }
  if (!b.available()) {
    rows.push([name, "no device", "", "", "", ""]);
    continue;
  }
  const m = measure(b, mib * 2 ** 20, threads, reps);
  rows.push([`${name} (${b.deviceName()})`, threads || "all", pm(m.read), m.sustained.toFixed(1), range(m.passes), pm(m.copy)]);
  results.push({
    backend: name, device: b.deviceName(), threads, mib, readGBs: median(m.read), readStd: stddev(m.read), copyGBs: median(m.copy), copyStd: stddev(m.copy),
    sustainedReadGBs: m.sustained, read: m.read, copy: m.copy, passes: m.passes,
  });
}
table(["backend", "threads", "read GB/s (best)", "sustained read GB/s", "its passes", "copy GB/s"], rows);
writeJson(f.out, { bench: "membw", date: new Date().toISOString(), machine: machine(), results });
