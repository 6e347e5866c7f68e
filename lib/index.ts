/**
 * skipdecode — fast decoder-only LM inference with SkipDecode layer skipping.
 *
 * @example
 * import { EMBEDDED_MODEL, SkipDecoder } from "skipdecode";
 * using dec = await SkipDecoder.load(EMBEDDED_MODEL);
 * const r = await dec.generate("The committee met on Tuesday", { maxNewTokens: 16, speedup: 2 });
 */
export { SkipDecoder, LOAD_DEFAULTS, type LoadOptions, type ForwardOptions, type KvStats, type WeightDType } from "./decoder.ts";
export { describeLoad, type LoadSummary, type StoredTensor } from "./engine/weights.ts";
export type { ModelSpec } from "./checkpoint/config.ts";
export { SkipTokenizer, StreamDecoder } from "./checkpoint/tokenizer.ts";
export { SkipPolicy, type DecaySettings, type PowerSettings, type SpeedupSettings } from "./generation/policy.ts";
export { GENERATE_DEFAULTS, type GenerateOptions, type Prompt } from "./generation/generate.ts";
export { chatLimits, type ChatLimits, type ChatMessage, type ChatTemplateOptions } from "./text/chat.ts";
export { TemplateLimitError, type TemplateLimit } from "./text/bounded_template.ts";
export type { FinalEvent, FinishReason, GenerateResult, GenerationStats, StreamEvent, TokenEvent, TokenLogprob } from "./generation/results.ts";
export { readModelSpec } from "./checkpoint/config.ts";
export { NativeError, type BackendName } from "./engine/native.ts";
export { EMBEDDED_LLAMA_MODEL, EMBEDDED_MODEL } from "./embedded.ts";
