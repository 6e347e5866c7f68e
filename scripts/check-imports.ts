#!/usr/bin/env bun
/**
 * Checks the layering of lib/: no import cycle among its modules (type-only
 * imports count: a cycle of types is a cycle of concepts) and no import of
 * server/, bin/ or anything else outside lib/ but packages. Prints each
 * problem and exits 1, or prints a one-line summary and exits 0.
 *
 *   bun scripts/check-imports.ts [DIR]     (default: lib/ of this checkout)
 *
 * test/layers.test.ts runs it; docs/DESIGN.md ("Layers of the code") says
 * what the folders of lib/ are.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";

/** Every .ts file under `dir`. */
function sources(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir)) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) out.push(...sources(p));
    else if (p.endsWith(".ts")) out.push(p);
  }
  return out.sort();
}

/** The module specifiers a file imports or re-exports, static and dynamic, with its comments removed. */
export function importsOf(text: string): string[] {
  const code = text.replace(/\/\*[\s\S]*?\*\//g, "").replace(/(^|[^:"'`])\/\/.*$/gm, "$1");
  const out: string[] = [];
  for (const m of code.matchAll(/(?:^|[\s;])(?:import|export)\s[^'"`;]*?\sfrom\s*["']([^"']+)["']/g)) out.push(m[1]!);
  for (const m of code.matchAll(/(?:^|[\s;])import\s*["']([^"']+)["']/g)) out.push(m[1]!);
  for (const m of code.matchAll(/\bimport\(\s*["']([^"']+)["']\s*\)/g)) out.push(m[1]!);
  return out;
}

export interface Report {
  modules: number;
  /** Imports that leave the folder for anything but a package or a node:/bun: builtin. */
  outside: string[];
  /** Each cycle once, as a path of files. */
  cycles: string[][];
}

export function checkImports(root: string): Report {
  const files = sources(root);
  const graph = new Map<string, string[]>();
  const outside: string[] = [];
  for (const f of files) {
    const deps: string[] = [];
    for (const spec of importsOf(readFileSync(f, "utf8"))) {
      if (!spec.startsWith(".")) continue; // a package or a builtin
      const target = resolve(dirname(f), spec);
      if (!target.startsWith(root + "/")) {
        outside.push(`${relative(root, f)} imports ${spec} (outside ${relative(process.cwd(), root) || "."})`);
        continue;
      }
      deps.push(target);
    }
    graph.set(f, deps);
  }
  // Tarjan's strongly connected components: every component of more than one
  // module (or a module importing itself) holds a cycle; report one per component.
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const on = new Set<string>();
  const cycles: string[][] = [];
  let next = 0;
  const visit = (v: string): void => {
    index.set(v, next);
    low.set(v, next++);
    stack.push(v);
    on.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (on.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) !== index.get(v)) return;
    const comp: string[] = [];
    let w: string;
    do {
      w = stack.pop()!;
      on.delete(w);
      comp.push(w);
    } while (w !== v);
    if (comp.length > 1 || (graph.get(v) ?? []).includes(v)) cycles.push(cycleIn(new Set(comp)));
  };
  /** One cycle through a strongly connected component, as a path that ends where it starts. */
  const cycleIn = (comp: Set<string>): string[] => {
    const start = [...comp].sort()[0]!;
    const seen = new Map<string, string>();
    const queue = [start];
    while (queue.length) {
      const v = queue.shift()!;
      for (const w of graph.get(v) ?? []) {
        if (!comp.has(w)) continue;
        if (w === start) {
          const path = [start];
          for (let u = v; u !== start; u = seen.get(u)!) path.splice(1, 0, u);
          path.push(start);
          return path.map((p) => relative(root, p));
        }
        if (!seen.has(w)) {
          seen.set(w, v);
          queue.push(w);
        }
      }
    }
    return [...comp].map((p) => relative(root, p));
  };
  for (const f of files) if (!index.has(f)) visit(f);
  return { modules: files.length, outside, cycles };
}

if (import.meta.main) {
  const root = resolve(process.argv[2] ?? join(import.meta.dir, "..", "lib"));
  const r = checkImports(root);
  for (const o of r.outside) console.log(`outside: ${o}`);
  for (const c of r.cycles) console.log(`cycle: ${c.join(" → ")}`);
  if (r.outside.length || r.cycles.length) process.exit(1);
  console.log(`${relative(process.cwd(), root) || "."}: ${r.modules} modules, no import cycle, nothing imported from outside`);
}
