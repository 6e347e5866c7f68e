/**
 * lib/'s layering (scripts/check-imports.ts): no import cycle among its
 * modules, type-only imports included, and nothing imported from outside lib/
 * but packages — so the library never loads the server or the CLI. The
 * checker is checked too, on a small tree with a cycle and a way out.
 */
import { describe, expect, test } from "bun:test";
import { mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { checkImports, importsOf } from "../scripts/check-imports.ts";
import { cleanupTemp, tempDir } from "./helpers.ts";

describe("lib/ layering", () => {
  test("no import cycle, no import of server/, bin/ or anything else outside lib/", () => {
    const r = checkImports(resolve(import.meta.dir, "..", "lib"));
    expect(r.modules).toBeGreaterThan(30);
    expect(r.outside).toEqual([]);
    expect(r.cycles).toEqual([]);
  });

  test("the checker finds cycles (through type imports too) and imports from outside", () => {
    const root = tempDir("skd-layers-");
    const lib = join(root, "lib");
    mkdirSync(join(lib, "a"), { recursive: true });
    writeFileSync(join(lib, "a", "x.ts"), 'import { y } from "../y.ts";\nexport const x = 1;\n');
    writeFileSync(join(lib, "y.ts"), 'import type { X } from "./a/x.ts"; // a comment: import "../nothing.ts"\nexport const y = 2;\n');
    writeFileSync(join(lib, "z.ts"), 'export { serve } from "../server/main.ts";\nimport "node:fs";\nawait import("./y.ts");\n');
    const r = checkImports(lib);
    expect(r.cycles).toEqual([["a/x.ts", "y.ts", "a/x.ts"]]);
    expect(r.outside.length).toBe(1);
    expect(r.outside[0]).toMatch(/^z\.ts imports \.\.\/server\/main\.ts \(outside /);
    expect(importsOf('import a from "./a.ts";\nexport * from "./b.ts";\n/* import "./c.ts" */\nconst d = await import("./d.ts");')).toEqual(["./a.ts", "./b.ts", "./d.ts"]);
    cleanupTemp();
  });
});
