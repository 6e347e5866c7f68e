#!/usr/bin/env bun
/**
 * bench chart — draws bench decode's JSON as an SVG with Vega-Lite: decode
 * tokens/s against the speedup target, and measured vs ideal speedup (the
 * dashed diagonal is "measured = target").
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import * as vega from "vega";
import { compile, type TopLevelSpec } from "vega-lite";
import { flags, ROOT } from "./common.ts";

const USAGE = `usage: bun run bench chart [--in bench/results/decode.json] [--out bench/results/decode.svg]`;
const f = flags(USAGE, {
  in: { type: "string", default: join(ROOT, "bench/results/decode.json") },
  out: { type: "string", default: join(ROOT, "bench/results/decode.svg") },
  help: { type: "boolean", default: false },
});

interface Row {
  model: string;
  batch: number;
  speedup: number;
  decodeTokS: number;
  idealSpeedup: number;
  measuredSpeedup: number;
}
let data: { machine: string; date: string; results: Row[] };
try {
  data = JSON.parse(readFileSync(f.in, "utf8"));
} catch (e) {
  console.error(`cannot read ${f.in} (${(e as Error).message}); run \`bun run bench decode\` first`);
  process.exit(1);
}
const values = data.results.map((r) => ({ ...r, series: `${r.model}, batch ${r.batch}` }));
const speedupValues = values.flatMap((r) => [
  { ...r, kind: "measured", value: r.measuredSpeedup },
  { ...r, kind: "ideal", value: r.idealSpeedup },
]);
const color = { field: "series", type: "nominal", title: "model, batch" } as const;
const x = { field: "speedup", type: "quantitative", title: "speedup target", scale: { zero: false } } as const;
const spec: TopLevelSpec = {
  $schema: "https://vega.github.io/schema/vega-lite/v5.json",
  title: { text: "skipdecode: decode throughput and SkipDecode speedup", subtitle: `${data.machine} — ${data.date.slice(0, 10)}` },
  hconcat: [
    {
      width: 340,
      height: 260,
      data: { values },
      mark: { type: "line", point: true },
      encoding: { x, y: { field: "decodeTokS", type: "quantitative", title: "decode tokens/s (median)" }, color },
    },
    {
      width: 340,
      height: 260,
      layer: [
        {
          data: { values: speedupValues },
          mark: { type: "line", point: true },
          encoding: {
            x,
            y: { field: "value", type: "quantitative", title: "speedup over full decoding" },
            color,
            strokeDash: { field: "kind", type: "nominal", title: "speedup", scale: { domain: ["measured", "ideal"], range: [[1, 0], [4, 3]] } },
          },
        },
        {
          data: { values: [{ a: 1, b: 1 }, { a: Math.max(...values.map((v) => v.speedup)), b: Math.max(...values.map((v) => v.speedup)) }] },
          mark: { type: "line", color: "#999", strokeDash: [2, 2] },
          encoding: { x: { field: "a", type: "quantitative" }, y: { field: "b", type: "quantitative" } },
        },
      ],
    },
  ],
};
const view = new vega.View(vega.parse(compile(spec).spec), { renderer: "none" });
writeFileSync(f.out, await view.toSVG());
view.finalize();
console.log(`wrote ${f.out} (${values.length} configurations)`);
