/**
 * OpenAI-style error bodies: `{"error": {"message", "type", "param", "code"}}`.
 * Every failure the server answers goes through {@link ApiError}, so no
 * handler returns a bare string, a stack or an HTML page.
 */
import type { Context } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";

/** The `type` field: OpenAI's names for the kinds of failure. */
export type ErrorType = "invalid_request_error" | "not_found_error" | "rate_limit_error" | "server_error";

/** The JSON body of an error response. */
export interface ErrorBody {
  error: { message: string; type: ErrorType; param: string | null; code: string | null };
}

/**
 * An error the client should see as it is: status, message, param and code.
 *
 * @example
 * throw new ApiError(400, "max_tokens must be at least 1", { param: "max_tokens" });
 */
export class ApiError extends Error {
  readonly status: ContentfulStatusCode;
  readonly type: ErrorType;
  readonly param: string | null;
  readonly code: string | null;
  /** Extra response headers (Retry-After on 429). */
  readonly headers: Record<string, string>;

  constructor(
    status: ContentfulStatusCode,
    message: string,
    opts: { type?: ErrorType; param?: string | null; code?: string | null; headers?: Record<string, string> } = {},
  ) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.type = opts.type ?? (status === 404 ? "not_found_error" : status === 429 ? "rate_limit_error" : status >= 500 ? "server_error" : "invalid_request_error");
    this.param = opts.param ?? null;
    this.code = opts.code ?? null;
    this.headers = opts.headers ?? {};
  }

  /** The response body. */
  get body(): ErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/**
 * Answers with an {@link ApiError}'s status, headers and body.
 *
 * @example
 * app.notFound((c) => errorResponse(c, new ApiError(404, "no route")));
 */
export function errorResponse(c: Context, e: ApiError): Response {
  for (const [k, v] of Object.entries(e.headers)) c.header(k, v);
  return c.json(e.body, e.status);
}
