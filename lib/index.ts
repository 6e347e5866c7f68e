/**
 * skipdecode — fast decoder-only LM inference with SkipDecode layer skipping.
 *
 * @example
 * import { SkipDecoder } from "skipdecode";
 * const dec = await SkipDecoder.load("models/tiny");
 * const logits = await dec.forward([2, 10, 11]);
 */
export { SkipDecoder, LOAD_DEFAULTS, type LoadOptions, type ForwardOptions, type WeightDType } from "./decoder.ts";
export type { ModelSpec } from "./checkpoint/config.ts";
export { SkipTokenizer, StreamDecoder } from "./checkpoint/tokenizer.ts";
export { SkipPolicy, type DecaySettings, type PowerSettings, type SpeedupSettings } from "./policy.ts";
export { GENERATE_DEFAULTS, type GenerateOptions, type Prompt } from "./generate.ts";
export { chatLimits, type ChatLimits, type ChatMessage, type ChatTemplateOptions } from "./chat.ts";
export { TemplateLimitError, type TemplateLimit } from "./bounded_template.ts";
export type { FinalEvent, FinishReason, GenerateResult, GenerationStats, StreamEvent, TokenEvent, TokenLogprob } from "./scheduler.ts";
export { readModelSpec } from "./checkpoint/config.ts";
export { NativeError, type BackendName } from "./native.ts";
