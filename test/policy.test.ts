/** SkipPolicy: bounds, monotonicity (property tests), forSpeedup, errors. */
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { SkipPolicy } from "../lib/generation/policy.ts";

/** Valid decay settings: L, warm-up, max >= min >= max(1, w), span. */
const decaySettings = fc
  .record({ L: fc.integer({ min: 1, max: 48 }), w: fc.integer({ min: 0, max: 4 }), a: fc.nat(), b: fc.nat(), span: fc.integer({ min: 1, max: 500 }) })
  .filter(({ L, w }) => w <= L)
  .map(({ L, w, a, b, span }) => {
    const lo = Math.max(1, w);
    const x = lo + (a % (L - lo + 1));
    const y = lo + (b % (L - lo + 1));
    return { numLayers: L, maxLayers: Math.max(x, y), minLayers: Math.min(x, y), span, warmupLayers: w };
  });

function checkPolicy(p: SkipPolicy, steps: number): void {
  let prev = Infinity;
  for (let i = 0; i < steps; i++) {
    const b = p.layersAt(i);
    expect(Number.isInteger(b)).toBe(true);
    expect(b).toBeLessThanOrEqual(prev);
    expect(b).toBeGreaterThanOrEqual(Math.max(1, p.warmupLayers));
    expect(b).toBeLessThanOrEqual(p.numLayers);
    prev = b;
  }
}

describe("SkipPolicy properties", () => {
  test("linear: non-increasing, within [max(1,w), L], max at 0, min from span on", () => {
    fc.assert(
      fc.property(decaySettings, (s) => {
        const p = SkipPolicy.linear(s);
        checkPolicy(p, s.span + 5);
        expect(p.layersAt(0)).toBe(s.maxLayers);
        expect(p.layersAt(s.span)).toBe(s.minLayers);
        expect(p.layersAt(s.span * 10)).toBe(s.minLayers);
      }),
      { numRuns: 300 },
    );
  });

  test("power: non-increasing and within bounds for any exponent", () => {
    fc.assert(
      fc.property(decaySettings, fc.double({ min: 0.05, max: 8, noNaN: true }), (s, exponent) => {
        const p = SkipPolicy.power({ ...s, exponent });
        checkPolicy(p, s.span + 5);
        expect(p.layersAt(0)).toBe(s.maxLayers);
        expect(p.layersAt(s.span)).toBe(s.minLayers);
      }),
      { numRuns: 300 },
    );
  });

  test("forSpeedup: mean budget over the span within one layer of L / s", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 40 }),
        fc.integer({ min: 0, max: 3 }),
        fc.integer({ min: 1, max: 300 }),
        fc.double({ min: 0, max: 1, noNaN: true }),
        (L, w0, span, f) => {
          const w = Math.min(w0, L);
          const most = L / Math.max(1, w);
          const s = 1 + f * (most - 1);
          const p = SkipPolicy.forSpeedup(s, { numLayers: L, span, warmupLayers: w });
          checkPolicy(p, span + 2);
          expect(Math.abs(p.meanLayers(span) - L / s)).toBeLessThanOrEqual(1);
        },
      ),
      { numRuns: 200 },
    );
  });

  test("meanLayers equals the plain average", () => {
    fc.assert(
      fc.property(decaySettings, fc.double({ min: 0.2, max: 4, noNaN: true }), fc.integer({ min: 1, max: 700 }), (s, e, n) => {
        const p = SkipPolicy.power({ ...s, exponent: e });
        let sum = 0;
        for (let i = 0; i < n; i++) sum += p.layersAt(i);
        expect(p.meanLayers(n)).toBeCloseTo(sum / n, 9);
      }),
      { numRuns: 200 },
    );
  });
});

describe("SkipPolicy examples and errors", () => {
  test("full and the paper's linear decay", () => {
    expect(SkipPolicy.full(12).layersAt(999)).toBe(12);
    const p = SkipPolicy.linear({ numLayers: 12, maxLayers: 12, minLayers: 4, span: 8 });
    expect([0, 1, 2, 3, 4, 5, 6, 7, 8, 9].map((i) => p.layersAt(i))).toEqual([12, 11, 10, 9, 8, 7, 6, 5, 4, 4]);
    expect(p.idealSpeedup(8)).toBeCloseTo(12 / 8.5, 9);
    expect(String(p)).toBe("linear 12→4 over 8 steps, warm-up 1");
    expect(SkipPolicy.forSpeedup(1, { numLayers: 12, span: 10 }).kind).toBe("full");
  });

  test("impossible settings throw a clear error", () => {
    const L = 12;
    expect(() => SkipPolicy.linear({ numLayers: L, maxLayers: 4, minLayers: 6, span: 10 })).toThrow(/minLayers \(6\) must not exceed maxLayers \(4\)/);
    expect(() => SkipPolicy.linear({ numLayers: L, maxLayers: 13, minLayers: 6, span: 10 })).toThrow(/maxLayers must be an integer in 1\.\.12/);
    expect(() => SkipPolicy.linear({ numLayers: L, maxLayers: 8, minLayers: 1, span: 10, warmupLayers: 2 })).toThrow(/minLayers must be an integer in 2\.\.12/);
    expect(() => SkipPolicy.linear({ numLayers: L, maxLayers: 8, minLayers: 2, span: 0 })).toThrow(/span must be an integer/);
    expect(() => SkipPolicy.linear({ numLayers: L, maxLayers: 8, minLayers: 2, span: 5, foo: 1 } as never)).toThrow(/unknown setting "foo"/);
    expect(() => SkipPolicy.power({ numLayers: L, maxLayers: 8, minLayers: 2, span: 5, exponent: 0 })).toThrow(/exponent must be/);
    expect(() => SkipPolicy.forSpeedup(0.5, { numLayers: L, span: 5 })).toThrow(/speedup must be a number in \[1, 12\]/);
    expect(() => SkipPolicy.forSpeedup(7, { numLayers: L, span: 5, warmupLayers: 2 })).toThrow(/\[1, 6\] for 12 layers with 2 warm-up/);
    expect(() => SkipPolicy.forSpeedup(NaN, { numLayers: L, span: 5 })).toThrow(/speedup must be/);
    expect(() => SkipPolicy.full(0)).toThrow(/numLayers must be an integer/);
    expect(() => SkipPolicy.full(4).layersAt(-1)).toThrow(/step must be an integer >= 0/);
  });
});
