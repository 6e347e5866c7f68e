/**
 * The slot pool (lib/generation/slots.ts), the one owner of an engine's KV
 * slots: over random sequences of takes and gives, every slot is free or held,
 * never both; a taken slot was reset when taken, a given one when given back
 * (not once the engine is freed); taking from a full pool and giving back a
 * slot twice throw.
 */
import { describe, expect, test } from "bun:test";
import { SlotPool } from "../lib/generation/slots.ts";
import { Rng } from "../lib/tiny/model.ts";

function fakeEngine() {
  const resets: number[] = [];
  return { resets, freed: false, resetSlot: (s: number) => void resets.push(s) };
}

describe("SlotPool", () => {
  test("every slot is free or held, never both, over random operation sequences", () => {
    for (let seed = 0; seed < 20; seed++) {
      const rng = new Rng(seed);
      const size = 1 + Math.floor(rng.next() * 8);
      const engine = fakeEngine();
      const pool = new SlotPool(size, engine);
      const held = new Set<number>();
      for (let op = 0; op < 300; op++) {
        if (held.size < size && (held.size === 0 || rng.next() < 0.55)) {
          const s = pool.acquire();
          expect(held.has(s)).toBe(false);
          expect(s >= 0 && s < size).toBe(true);
          expect(engine.resets.at(-1)).toBe(s); // reset when taken
          held.add(s);
        } else {
          const list = [...held];
          const s = list[Math.floor(rng.next() * list.length)]!;
          pool.release(s);
          expect(engine.resets.at(-1)).toBe(s); // reset when given back
          held.delete(s);
        }
        expect(pool.free).toBe(size - held.size);
      }
    }
  });

  test("a full pool, a slot given back twice, and a freed engine", () => {
    const engine = fakeEngine();
    const pool = new SlotPool(2, engine);
    const a = pool.acquire();
    pool.acquire();
    expect(() => pool.acquire()).toThrow(/all 2 sequence slots are busy \(raise maxBatch\)/);
    pool.release(a);
    expect(() => pool.release(a)).toThrow(/slot 0 is not in use \(released twice\?\)/);
    expect(() => pool.release(7)).toThrow(/slot 7 is not in use/);
    engine.freed = true;
    const before = engine.resets.length;
    pool.release(1);
    expect(engine.resets.length).toBe(before); // nothing to reset on a freed engine
    expect(pool.free).toBe(2);
  });

  test("a reset that fails leaves the slot free", () => {
    const pool = new SlotPool(1, { freed: false, resetSlot: () => {
      throw new Error("engine gone");
    } });
    expect(() => pool.acquire()).toThrow(/engine gone/);
    expect(pool.free).toBe(1);
  });
});
