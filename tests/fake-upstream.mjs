// A local fake of OpenRouter's HTTP API, over a real socket, with no dependencies.
// Demo mode (`npm start` without AI_GATEWAY_API_KEY) and the integration tests share it.
//
//   node tests/fake-upstream.mjs [--port 8788] [--key sk-or-...]
//
// It validates requests the way OpenRouter does (auth, JSON, model, messages)
// and answers deterministically:
//   reply      "Echo: <last user text>", one token per word
//   prompt     ceil(chars of all message text / 4) + 3 per message
//   cost       tokens × the catalogue price below (USD), as `usage.cost`
// Faults on demand, chosen by the body field `fake_fault` (the gateway passes
// unknown fields through unchanged):
//   "500" | "502" | "503"   that status with an OpenRouter error body
//   "429"                   429 with `retry-after: 7`
//   "401"                   401, as for a bad upstream key
//   "slow:<ms>"             waits before answering
//   "slow_body:<ms>"        non-stream: the headers and half the body at once, the rest <ms> later
//   "cut:<n>"               stream: the socket closes after n content chunks
//                           non-stream: the socket closes mid-body
//   "non_json"              200 with an HTML body
//   "tools"                 answers with a tool call (streamed as argument pieces)
//   "error_event"           stream: a mid-stream error event, then the end
//                           non-stream: 200 with an error body (OpenRouter's way once the model has started)
//   "error_event_done"      stream: a mid-stream error event, then `[DONE]` (no usage chunk)
//   "no_record"             keeps no generation record (GET /generation answers 404 for it)
//   "endless_line"          stream: one word, then a line that never ends (9 MiB, the socket left open)
//   "redirect"              307 to /__redirected/chat/completions (a chat endpoint too, were it followed)
//   "empty_usage"           non-stream: `usage: {}`; stream: the usage chunk, then another with `usage: {}`
//   "over_report"           the usage (and its cost) counts 10,000 output tokens more than came
// A stream whose last user message holds "[think:<ms>]" sends OpenRouter's keep-alive comment, then waits;
// "[silent:<ms>]" waits with nothing sent (as a direct provider's reasoning model).
// The direct Anthropic API (whose bodies the gateway builds) takes "[cut:<n>]" in the last message's text:
// the stream closes after n text deltas, after `message_start` told the prompt's usage (with
// "[cache_write:<n>]", n of its tokens are written to the cache). "[slow:<ms>]" spaces its text deltas (and, on
// the OpenRouter fake, its chunks, as `chunk_delay_ms` does).
// `chunk_delay_ms` (body field) spaces streamed chunks out. A thinking budget (`reasoning.max_tokens`), an
// effort (`reasoning.effort`, what a Responses client asks), or reasoning enabled without either
// (OpenRouter's adaptive thinking on Claude 4.6 and later), gets a thought first (`reasoning`, `reasoning_details`; signed for anthropic/* models), its words
// counted as completion and reasoning tokens; with `reasoning.exclude` the thought is counted and
// billed but not sent. A stream stops generating when its client goes away, like OpenRouter.
// GET /generation?id= answers a generation's record (tokens, cost, `cancelled`) as OpenRouter does:
// 404 until a moment (300 ms) after the generation ended.
// Test helpers: GET /__requests lists the requests received (newest last),
// DELETE /__requests forgets them. POST /__fail {provider, status, times?, retry_after?}
// makes the next `times` (default 1) chat or embeddings calls to that provider (openrouter | openai |
// anthropic | google) fail with that status, each in the provider's own error shape. On
// OpenRouter, a body with `models` walks that list as OpenRouter does: each failure hands over
// to the next model, and the answer names the model that served.
//
// OpenAI's own API is served under /openai/v1 (OPENAI_BASE_URL), validated like the real
// one: Bearer FAKE_OPENAI_KEY, known models only, unknown request arguments refused,
// `stream_options` only with `stream`, tool messages only after assistant tool calls.
// Answers name the dated snapshot, carry no `usage.cost`, and a stream has a usage chunk
// only when `stream_options.include_usage` is set.
//
// Key management (OpenRouter's /api/v1/keys, with the provisioning key only):
//   GET /keys?offset=&include_disabled=   POST /keys {name, limit?, limit_reset?}   GET|PATCH|DELETE /keys/<hash>
// validated like OpenRouter (name required; limit a number >= 0 or null; limit_reset daily|weekly|monthly|null).
// Test helpers: POST /__keys/fail {status, times?} makes the next key-management calls fail with
// that status; POST /__keys/delay {ms} slows every key-management answer down;
// POST /__keys/<hash>/usage {usage} sets a key's spend (USD).

import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import { pathToFileURL } from 'node:url';

export const CATALOGUE = [
  { id: 'openai/gpt-4o-mini', name: 'OpenAI: GPT-4o-mini', context_length: 128000, prompt: '0.00000015', completion: '0.0000006' },
  { id: 'openai/gpt-4o', name: 'OpenAI: GPT-4o', context_length: 128000, prompt: '0.0000025', completion: '0.00001' },
  { id: 'anthropic/claude-3.5-sonnet', name: 'Anthropic: Claude 3.5 Sonnet', context_length: 200000, prompt: '0.000003', completion: '0.000015' },
  { id: 'anthropic/claude-3-5-haiku-20241022', name: 'Anthropic: Claude 3.5 Haiku', context_length: 200000, prompt: '0.0000008', completion: '0.000004' },
  // Thinks adaptively and takes an effort (Claude 4.6 and later), on Anthropic's API too.
  { id: 'anthropic/claude-sonnet-4-6', name: 'Anthropic: Claude Sonnet 4.6', context_length: 200000, prompt: '0.000003', completion: '0.000015' },
  { id: 'google/gemini-2.0-flash-001', name: 'Google: Gemini 2.0 Flash', context_length: 1048576, prompt: '0.0000001', completion: '0.0000004' },
  // Signs its function calls, and refuses a history whose calls lost their signatures (Gemini 3 and later).
  { id: 'google/gemini-3-pro-preview', name: 'Google: Gemini 3 Pro Preview', context_length: 1048576, prompt: '0.000002', completion: '0.000012' },
  // A long-context tier, as OpenRouter lists one: from 200K prompt tokens the whole request at these rates.
  {
    id: 'google/gemini-2.5-pro', name: 'Google: Gemini 2.5 Pro', context_length: 1048576, prompt: '0.00000125', completion: '0.00001',
    overrides: [{ min_prompt_tokens: 200000, prompt: '0.0000025', completion: '0.000015' }],
  },
  { id: 'meta-llama/llama-3.1-8b-instruct', name: 'Meta: Llama 3.1 8B Instruct', context_length: 131072, prompt: '0.00000002', completion: '0.00000005' },
  // A fee per request on top of the tokens (the table cannot hold it: synced inactive).
  { id: 'perplexity/sonar', name: 'Perplexity: Sonar', context_length: 127072, prompt: '0.000001', completion: '0.000001', request: '0.005' },
  { id: 'openai/text-embedding-3-small', name: 'OpenAI: Text Embedding 3 Small', context_length: 8192, prompt: '0.00000002', completion: '0', embedding: 1536 },
];

/** How the fake Gemini's thought signatures begin (the real ones are opaque). */
const GEMINI_SIGNATURE = 'ZmFrZS1nZW1pbmk';

/** The only key the fake Gemini API accepts. */
export const FAKE_GOOGLE_KEY = 'fake-google-api-key';

/** The only key the fake OpenAI API accepts. */
export const FAKE_OPENAI_KEY = 'sk-proj-test-openai-key';

/** The only key the fake Anthropic API accepts. */
export const FAKE_ANTHROPIC_KEY = 'sk-ant-test-key';

/** The `anthropic-beta` values the fake Anthropic API knows (others are refused, as Anthropic does). */
const ANTHROPIC_BETAS = new Set([
  'prompt-caching-2024-07-31', 'interleaved-thinking-2025-05-14', 'fine-grained-tool-streaming-2025-05-14',
  'token-efficient-tools-2025-02-19', 'output-128k-2025-02-19', 'claude-code-20250219', 'context-1m-2025-08-07',
  'context-management-2025-06-27',
]);

/** The fake Anthropic's signature of a thinking text: proof, on a later turn, that it came back unchanged. */
export function thinkingSignature(text) {
  return createHash('sha256').update(`fake-thinking:${text}`).digest('base64');
}

/** The only key the fake's key-management API accepts (tests and demo mode). */
export const FAKE_PROVISIONING_KEY = 'sk-or-prov-test-provisioning-key';

const ROLES = new Set(['system', 'developer', 'user', 'assistant', 'tool', 'function']);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function errorBody(code, message, metadata) {
  return JSON.stringify({ error: { code, message, ...(metadata ? { metadata } : {}) } });
}

function sendJson(res, status, body, headers = {}) {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

function messageText(content) {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) return content.map((p) => (p && p.type === 'text' ? p.text ?? '' : '')).join(' ');
  return '';
}

/** What the fakes bill a document (a `file` part, an Anthropic `document` block): a one-page PDF's tokens. */
export const DOCUMENT_TOKENS = 1500;

/** The documents among a message's parts or blocks, tool results' own included. */
function documentsIn(content) {
  if (!Array.isArray(content)) return 0;
  return content.reduce((n, p) => n + (p?.type === 'file' || p?.type === 'document' ? 1 : documentsIn(p?.content)), 0);
}

/** Deterministic token accounting for a request body. */
export function tokensFor(body) {
  const chars = body.messages.reduce((n, m) => n + messageText(m.content).length, 0);
  const documents = body.messages.reduce((n, m) => n + documentsIn(m.content), 0);
  const promptTokens = Math.ceil(chars / 4) + 3 * body.messages.length + DOCUMENT_TOKENS * documents;
  const lastUser = [...body.messages].reverse().find((m) => m.role === 'user');
  const words = ['Echo:', ...messageText(lastUser?.content).split(/\s+/).filter(Boolean)].slice(0, 64);
  let pieces = words.map((w, i) => (i === 0 ? w : ' ' + w));
  let finish = 'stop';
  // A stop sequence (one of `stop`, a word of the echo) ends the answer before it.
  const stops = typeof body.stop === 'string' ? [body.stop] : Array.isArray(body.stop) ? body.stop : [];
  const at = words.findIndex((w) => stops.includes(w));
  const stoppedAt = at >= 0 ? words[at] : null;
  if (at >= 0) pieces = pieces.slice(0, at);
  const max = body.max_completion_tokens ?? body.max_tokens;
  if (Number.isInteger(max) && max < pieces.length) {
    pieces = pieces.slice(0, max);
    finish = 'length';
  }
  return { promptTokens, pieces, finish, stoppedAt };
}

/**
 * POST /embeddings, as OpenAI (`native`: its own model ids, no `usage.cost`) and OpenRouter answer it:
 * `input` a string, strings, token ids or arrays of them; `encoding_format` float (default) or base64
 * (little-endian float32); `dimensions` shortens the vectors. One token per 4 characters of text. OpenAI
 * refuses arguments it does not know. On OpenRouter, `fake_fault` `total_only` reports only
 * `total_tokens` (as some providers do), `no_usage` no usage at all, `floats` numbers whatever the
 * `encoding_format` (as a provider that ignores it would).
 */
function embeddings(res, body, { native }) {
  const fail = (status, message, param = null) => sendJson(res, status, native
    ? { error: { message, type: 'invalid_request_error', param, code: null } }
    : errorBody(status, message));
  if (!body || typeof body !== 'object') return fail(400, 'Invalid JSON body');
  // OpenAI's own API refuses arguments it does not know (OpenRouter takes its own, such as `provider`).
  const unknown = native && Object.keys(body).find((k) => !['model', 'input', 'encoding_format', 'dimensions', 'user'].includes(k));
  if (unknown) return fail(400, `Unrecognized request argument supplied: ${unknown}`, unknown);
  const id = native ? `openai/${body.model}` : body.model;
  const model = CATALOGUE.find((c) => c.id === id && c.embedding);
  if (!model) return fail(native ? 404 : 400, `${body.model} is not an embedding model`, 'model');
  const items = typeof body.input === 'string' ? [body.input]
    : Array.isArray(body.input) && body.input.every((t) => Number.isInteger(t)) ? [body.input] : body.input;
  if (!Array.isArray(items) || items.length === 0 || items.length > 2048) return fail(400, "'input' is invalid", 'input');
  const tokens = items.map((x) => (typeof x === 'string' && x.length ? Math.ceil(x.length / 4) : Array.isArray(x) && x.length && x.every(Number.isInteger) ? x.length : NaN));
  if (tokens.some(Number.isNaN)) return fail(400, "'input' is invalid", 'input');
  const format = body.encoding_format ?? 'float';
  if (!['float', 'base64'].includes(format)) return fail(400, "'encoding_format' must be float or base64", 'encoding_format');
  const size = body.dimensions ?? model.embedding;
  if (!Number.isInteger(size) || size < 1 || size > model.embedding) return fail(400, "'dimensions' is invalid", 'dimensions');
  const vector = (i) => Array.from({ length: size }, (_, j) => Math.sin(i + 1 + j / 7) / Math.sqrt(size));
  const floats = !native && body.fake_fault === 'floats';
  const encode = (v) => (format === 'base64' && !floats ? Buffer.from(new Float32Array(v).buffer).toString('base64') : v);
  const promptTokens = tokens.reduce((a, b) => a + b, 0);
  let usage = native ? { prompt_tokens: promptTokens, total_tokens: promptTokens } : (({ completion_tokens, ...u }) => u)(usageFor(id, promptTokens, 0));
  if (!native && body.fake_fault === 'total_only') usage = { total_tokens: promptTokens };
  return sendJson(res, 200, {
    object: 'list',
    data: items.map((_, i) => ({ object: 'embedding', index: i, embedding: encode(vector(i)) })),
    model: native ? body.model : id,
    ...(!native && body.fake_fault === 'no_usage' ? {} : { usage }),
  });
}

/** The model's rates (USD per token), for a prompt of `promptTokens` when given (a long-context tier applies from its size). */
export function priceOf(model, promptTokens = 0) {
  const m = CATALOGUE.find((c) => c.id === model);
  if (!m) return null;
  // The highest size reached (OpenRouter: later entries win per rate; these are listed by size).
  const reached = (m.overrides ?? []).filter((o) => promptTokens >= o.min_prompt_tokens);
  const tier = reached.sort((a, b) => a.min_prompt_tokens - b.min_prompt_tokens).at(-1) ?? {};
  return { prompt: Number(tier.prompt ?? m.prompt), completion: Number(tier.completion ?? m.completion) };
}

function usageFor(model, promptTokens, completionTokens) {
  const price = priceOf(model, promptTokens);
  const round = (usd) => Number(usd.toFixed(12));
  const cost = price ? promptTokens * price.prompt + completionTokens * price.completion : 0;
  return {
    prompt_tokens: promptTokens,
    completion_tokens: completionTokens,
    total_tokens: promptTokens + completionTokens,
    cost: round(cost),
    // OpenRouter's breakdown of what the account pays (the upstream's own cost is null without BYOK).
    is_byok: false,
    cost_details: {
      upstream_inference_cost: null,
      upstream_inference_prompt_cost: round(price ? promptTokens * price.prompt : 0),
      upstream_inference_completions_cost: round(price ? completionTokens * price.completion : 0),
    },
  };
}

/** Returns an error [status, body] when OpenRouter would refuse the request. */
function validate(body) {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return [400, errorBody(400, 'Invalid JSON body')];
  if (typeof body.model !== 'string' || !body.model) return [400, errorBody(400, 'No model specified')];
  if (!priceOf(body.model)) return [400, errorBody(400, `${body.model} is not a valid model ID`)];
  if (!Array.isArray(body.messages) || body.messages.length === 0) return [400, errorBody(400, 'Input required: specify "messages"')];
  for (const [i, m] of body.messages.entries()) {
    if (!m || typeof m !== 'object' || !ROLES.has(m.role)) return [400, errorBody(400, `messages[${i}]: invalid role`)];
  }
  for (const f of ['max_tokens', 'max_completion_tokens']) {
    if (body[f] !== undefined && body[f] !== null && !(Number.isInteger(body[f]) && body[f] > 0)) {
      return [400, errorBody(400, `${f} must be a positive integer`)];
    }
  }
  if (body.verbosity !== undefined && !['low', 'medium', 'high', 'max', 'xhigh'].includes(body.verbosity)) {
    return [400, errorBody(400, 'verbosity must be one of low, medium, high, max, xhigh')];
  }
  return null;
}

/**
 * The call a chat fake makes to the first declared tool: a free-text `input` to a tool whose only
 * parameter is that (a custom tool's stand-in), else a weather lookup.
 */
function toolCallFor(body) {
  const fn = Array.isArray(body.tools) && body.tools[0]?.function ? body.tools[0].function : { name: 'get_weather' };
  const props = Object.keys(fn.parameters?.properties ?? {});
  const args = props.length === 1 && props[0] === 'input'
    ? JSON.stringify({ input: '*** Begin Patch\n*** Add File: hello.txt\n+hello\n*** End Patch' })
    : '{"location":"Paris","unit":"celsius"}';
  return { id: 'call_fake_1', type: 'function', function: { name: fn.name, arguments: args } };
}

/** A call's arguments in the three pieces a stream sends them in. */
function argumentPieces(call) {
  const args = call.function.arguments;
  const third = Math.ceil(args.length / 3);
  return [args.slice(0, third), args.slice(third, 2 * third), args.slice(2 * third)];
}

/** Generations by id, for GET /generation: what each used, counted as it is generated. */
const generations = new Map();
const RECORD_LAG_MS = 300;

function generation(res, id) {
  const g = id ? generations.get(id) : undefined;
  if (!g || g.endedAt === null || Date.now() - g.endedAt < RECORD_LAG_MS) return sendJson(res, 404, errorBody(404, 'Generation not found'));
  const { cost } = usageFor(g.model, g.prompt, g.completion);
  sendJson(res, 200, {
    data: {
      id: g.id, model: g.model, streamed: g.streamed, cancelled: g.cancelled, provider_name: 'FakeProvider',
      created_at: new Date(g.startedAt).toISOString(), finish_reason: g.cancelled ? null : 'stop',
      tokens_prompt: g.prompt, tokens_completion: g.completion,
      native_tokens_prompt: g.prompt, native_tokens_completion: g.completion, native_tokens_reasoning: g.reasoning,
      native_tokens_cached: 0, total_cost: Number((cost + (g.writePremium ?? 0)).toFixed(12)), usage: cost,
      cache_discount: g.writePremium ? -g.writePremium : null,
    },
  });
}

async function chat(req, res, body, opts) {
  const invalid = validate(body);
  if (invalid) return sendJson(res, invalid[0], invalid[1]);
  const fault = typeof body.fake_fault === 'string' ? body.fake_fault : '';
  if (fault.startsWith('slow:')) await sleep(Number(fault.slice(5)) || 0);
  if (['500', '502', '503'].includes(fault)) return sendJson(res, Number(fault), errorBody(Number(fault), 'Provider returned error'));
  if (fault === '429') return sendJson(res, 429, errorBody(429, 'Rate limit exceeded: free-models-per-min'), { 'retry-after': '7' });
  if (fault === '401') return sendJson(res, 401, errorBody(401, 'No auth credentials found'));
  // A moderated model's provider flagged the input: OpenRouter's 403, with the reasons in `metadata`.
  if (fault === 'flagged') {
    const metadata = { reasons: ['harassment'], flagged_input: messageText(body.messages.at(-1)?.content).slice(0, 100), provider_name: 'OpenAI', model_slug: body.model };
    return sendJson(res, 403, errorBody(403, `${body.model} requires moderation on OpenAI. Your input was flagged for "harassment". No credits were charged.`, metadata));
  }
  // A redirect to the same API under another path: a gateway that followed it would be answered there.
  if (fault === 'redirect') return res.writeHead(307, { location: '/__redirected/chat/completions' }).end();
  if (fault === 'non_json') {
    res.writeHead(200, { 'content-type': 'text/html' });
    return res.end('<html><body>Bad gateway</body></html>');
  }

  const id = `gen-${Date.now()}-${Math.random().toString(36).slice(2, 12)}`;
  const created = Math.floor(Date.now() / 1000);
  const { promptTokens, pieces, finish, stoppedAt } = tokensFor(body);
  // What the provider said, as OpenRouter passes it on: Anthropic tells a stop sequence from an end of turn.
  const native = stoppedAt && finish === 'stop' && body.model.startsWith('anthropic/') ? 'stop_sequence' : finish;
  const tools = fault === 'tools';
  const call = tools ? toolCallFor(body) : null;
  // A thinking budget (`reasoning.max_tokens`) gets thinking first, as `reasoning` and `reasoning_details`
  // (signed for Anthropic's models, whose signatures must come back on later turns).
  const effort = typeof body.reasoning?.effort === 'string' && body.reasoning.effort !== 'none';
  const thinks = Number.isInteger(body.reasoning?.max_tokens) || body.reasoning?.enabled === true || effort;
  const thought = thinks && body.reasoning.enabled !== false
    ? `Thinking about: ${messageText([...body.messages].reverse().find((m) => m.role === 'user')?.content).slice(0, 40)}` : null;
  const signature = thought && body.model.startsWith('anthropic/') ? thinkingSignature(thought) : undefined;
  const detail = thought && { type: 'reasoning.text', text: thought, signature, format: signature ? 'anthropic-claude-v1' : 'unknown', index: 0 };
  const reasoningTokens = thought ? thought.split(' ').length : 0;
  // "over_report": the usage counts 10,000 output tokens more than came (an upstream past the output cap).
  const completionTokens = (tools ? 12 : pieces.length) + reasoningTokens + (fault === 'over_report' ? 10_000 : 0);
  const usage = usageFor(body.model, promptTokens, completionTokens);
  if (thought) usage.completion_tokens_details = { reasoning_tokens: reasoningTokens };
  // "[cache_write:<n>]": n prompt tokens written to the cache, billed at 1.25 times the prompt price (as
  // Anthropic's models bill a write); the record counts no writes, only their premium (a negative discount).
  const lastUser = messageText([...body.messages].reverse().find((m) => m.role === 'user')?.content);
  const cacheWrite = Math.min(promptTokens, Number(/\[cache_write:(\d+)\]/.exec(lastUser)?.[1] ?? 0));
  const writePremium = Number((cacheWrite * priceOf(body.model, promptTokens).prompt * 0.25).toFixed(12));
  if (cacheWrite) {
    usage.prompt_tokens_details = { cached_tokens: 0, cache_write_tokens: cacheWrite };
    usage.cost = Number((usage.cost + writePremium).toFixed(12));
  }
  const base = { id, provider: 'FakeProvider', model: body.model, object: 'chat.completion.chunk', created };
  // The thought is generated first; then each piece as it goes out.
  const record = { id, model: body.model, streamed: body.stream === true, cancelled: false, prompt: promptTokens,
    reasoning: reasoningTokens, completion: reasoningTokens, writePremium, startedAt: Date.now(), endedAt: null };
  if (fault !== 'no_record') generations.set(id, record);
  if (generations.size > 2000) generations.delete(generations.keys().next().value);
  const ended = () => {
    record.completion = completionTokens;
    record.endedAt = Date.now();
  };

  if (!body.stream) {
    const message = tools
      ? { role: 'assistant', content: null, tool_calls: [call] }
      : { role: 'assistant', content: pieces.join(''), refusal: null };
    if (thought && body.reasoning?.exclude !== true) Object.assign(message, { reasoning: thought, reasoning_details: [detail] });
    ended();
    if (fault === 'error_event') return sendJson(res, 200, JSON.stringify({ id, error: { code: 502, message: 'Provider returned error' } }));
    const text = JSON.stringify({
      ...base,
      object: 'chat.completion',
      choices: [{ index: 0, logprobs: null, finish_reason: tools ? 'tool_calls' : finish, native_finish_reason: tools ? 'tool_calls' : native, message }],
      usage: fault === 'empty_usage' ? {} : usage,
    });
    if (fault.startsWith('slow_body:')) {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      const half = Buffer.from(text).subarray(0, Buffer.byteLength(text) >> 1);
      res.write(half);
      await sleep(Number(fault.slice(10)) || 0);
      return res.destroyed ? undefined : res.end(Buffer.from(text).subarray(half.length));
    }
    if (fault.startsWith('cut:')) {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.write(text.slice(0, Math.floor(text.length / 2)));
      return setTimeout(() => res.socket.destroy(), 20);
    }
    return sendJson(res, 200, text);
  }

  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
  // "[think:<ms>]" in the last user message: the model works that long first, and OpenRouter keeps the
  // stream alive meanwhile with a comment (whatever dialect the client speaks, its text comes through).
  const thinkMs = Number(/\[think:(\d+)\]/.exec(messageText([...body.messages].reverse().find((m) => m.role === 'user')?.content))?.[1] ?? 0);
  if (thinkMs) {
    res.write(': OPENROUTER PROCESSING\n\n');
    await sleep(thinkMs);
  }
  // "[silent:<ms>]": the model works that long first and nothing comes meanwhile, as from OpenAI's or
  // Google's own API while a model reasons.
  const silentMs = Number(/\[silent:(\d+)\]/.exec(messageText([...body.messages].reverse().find((m) => m.role === 'user')?.content))?.[1] ?? 0);
  if (silentMs) {
    res.flushHeaders(); // the headers come at once, as from those APIs
    await sleep(silentMs);
  }
  // A client that goes away stops the generation: what was generated until then is what it used.
  res.on('close', () => {
    if (record.endedAt === null) Object.assign(record, { cancelled: true, endedAt: Date.now() });
  });
  const gone = () => record.cancelled;
  // `chunk_delay_ms`, or "[slow:<ms>]" in the last user message (for dialects that carry no such field).
  const delay = Number.isInteger(body.chunk_delay_ms) ? body.chunk_delay_ms : Number(/\[slow:(\d+)\]/.exec(lastUser)?.[1] ?? 0);
  const send = (obj) => res.write(`data: ${JSON.stringify(obj)}\n\n`);
  const chunk = (delta, finish_reason = null) => ({ ...base, choices: [{ index: 0, delta, finish_reason, native_finish_reason: finish_reason === finish ? native : finish_reason, logprobs: null }] });
  if (!silentMs) res.write(': OPENROUTER PROCESSING\n\n');
  const cutAfter = fault.startsWith('cut:') ? Number(fault.slice(4)) : Infinity;
  if (thought && body.reasoning?.exclude !== true) {
    for (const [i, w] of thought.split(' ').entries()) {
      const text = i === 0 ? w : ` ${w}`;
      send(chunk({ ...(i === 0 ? { role: 'assistant' } : {}), content: '', reasoning: text, reasoning_details: [{ ...detail, text, signature: undefined }] }));
    }
    if (signature) send(chunk({ content: '', reasoning_details: [{ ...detail, text: '', signature }] }));
  }

  if (tools) {
    send(chunk({ role: 'assistant', content: null, tool_calls: [{ index: 0, id: call.id, type: 'function', function: { name: call.function.name, arguments: '' } }] }));
    for (const part of argumentPieces(call)) {
      if (delay) await sleep(delay);
      send(chunk({ tool_calls: [{ index: 0, function: { arguments: part } }] }));
    }
    send(chunk({}, 'tool_calls'));
  } else if (fault === 'endless_line') {
    // One word, then a line that never ends (9 MiB and counting), the socket held open.
    send(chunk({ role: 'assistant', content: pieces[0] }));
    res.write('data: {"choices":[{"delta":{"content":"');
    const block = 'x'.repeat(64 * 1024);
    for (let i = 0; i < 144 && !gone(); i++) await new Promise((r) => res.write(block, r));
    return undefined;
  } else {
    for (const [i, piece] of pieces.entries()) {
      if (i >= cutAfter) {
        res.write('data: {"id":"' + id + '","choi'); // half an event, then the socket dies
        return setTimeout(() => res.socket.destroy(), 20);
      }
      if ((fault === 'error_event' || fault === 'error_event_done') && i === 2) {
        send({ ...base, error: { code: 502, message: 'Provider disconnected' }, choices: [{ index: 0, delta: { content: '' }, finish_reason: 'error' }] });
        record.endedAt = Date.now();
        if (fault === 'error_event_done') res.write('data: [DONE]\n\n');
        return res.end();
      }
      // OpenRouter's keep-alive comment comes while the model works, before what it then sends.
      if (i > 0 && i % 3 === 0 && !gone()) res.write(': OPENROUTER PROCESSING\n\n');
      if (delay && i > 0) await sleep(delay);
      if (gone()) return;
      send(chunk(i === 0 ? { role: 'assistant', content: piece } : { content: piece }));
      record.completion += 1;
    }
    send(chunk({ content: '' }, finish));
  }
  // Like OpenRouter: the usage chunk unless the client turned it off.
  ended();
  if (body.stream_options?.include_usage !== false) send({ ...base, choices: [], usage });
  if (fault === 'empty_usage') send({ ...base, choices: [], usage: {} });
  res.write('data: [DONE]\n\n');
  res.end();
}

function models(res, url) {
  // Like OpenRouter: text models only, unless `output_modalities` asks for embeddings too (or all).
  const asked = (url.searchParams.get('output_modalities') ?? 'text').split(',');
  const listed = CATALOGUE.filter((m) => asked.includes('all') || asked.includes(m.embedding ? 'embeddings' : 'text'));
  const data = listed.map((m) => ({
    id: m.id,
    canonical_slug: m.id,
    name: m.name,
    created: 1720000000,
    description: `${m.name} (fake)`,
    context_length: m.context_length,
    architecture: { modality: 'text->text', input_modalities: ['text'], output_modalities: ['text'], tokenizer: 'Other' },
    pricing: {
      prompt: m.prompt, completion: m.completion, request: m.request ?? '0', image: '0', web_search: '0', internal_reasoning: '0',
      // "0" where a model has no such rate, as OpenRouter lists them.
      input_cache_read: '0', input_cache_write: '0',
      ...(m.overrides ? { overrides: m.overrides } : {}),
    },
    top_provider: { context_length: m.context_length, max_completion_tokens: 16384, is_moderated: false },
    supported_parameters: ['max_tokens', 'temperature', 'tools', 'tool_choice', 'stop'],
  }));
  sendJson(res, 200, { data });
}

const RESETS = new Set(['daily', 'weekly', 'monthly', null]);

const OPENAI_ARGS = new Set(['messages', 'model', 'audio', 'frequency_penalty', 'function_call', 'functions', 'logit_bias', 'logprobs',
  'max_completion_tokens', 'max_tokens', 'metadata', 'modalities', 'n', 'parallel_tool_calls', 'prediction', 'presence_penalty',
  'prompt_cache_key', 'reasoning_effort', 'response_format', 'safety_identifier', 'seed', 'service_tier', 'stop', 'store', 'stream',
  'stream_options', 'temperature', 'tool_choice', 'tools', 'top_logprobs', 'top_p', 'user', 'verbosity', 'web_search_options']);

function openaiError(res, status, message, code = null, type = 'invalid_request_error', headers = {}) {
  return sendJson(res, status, { error: { message, type, param: null, code } }, headers);
}

/** OpenAI's Chat Completions API (`POST /openai/v1/chat/completions`); see the header comment. */
async function openai(req, res, body) {
  const auth = req.headers.authorization ?? '';
  if (auth !== `Bearer ${FAKE_OPENAI_KEY}`) return openaiError(res, 401, `Incorrect API key provided: ${auth.slice(7, 13)}****.`, 'invalid_api_key');
  if (!body || typeof body !== 'object') return openaiError(res, 400, 'We could not parse the JSON body of your request.');
  const unknown = Object.keys(body).find((k) => !OPENAI_ARGS.has(k));
  if (unknown) return openaiError(res, 400, `Unrecognized request argument supplied: ${unknown}`);
  if (!priceOf(`openai/${body.model}`)) return openaiError(res, 404, `The model \`${body.model}\` does not exist or you do not have access to it.`, 'model_not_found');
  if (body.stream_options !== undefined && body.stream !== true) return openaiError(res, 400, "The 'stream_options' parameter is only allowed when 'stream' is enabled.");
  if (!Array.isArray(body.messages) || body.messages.length === 0) return openaiError(res, 400, "Invalid 'messages': empty array. Expected an array with minimum length 1.");
  for (const [i, m] of body.messages.entries()) {
    if (!m || !ROLES.has(m.role)) return openaiError(res, 400, `Invalid value: '${m?.role}'. Supported values are: 'system', 'assistant', 'user', 'function', 'tool', and 'developer'.`);
    if (m.role === 'tool' && !body.messages.slice(0, i).some((p) => p.role === 'assistant' && p.tool_calls?.some((c) => c.id === m.tool_call_id))) {
      return openaiError(res, 400, "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.");
    }
    // A tool message's content parts are text only.
    const part = m.role === 'tool' && Array.isArray(m.content) ? m.content.findIndex((p) => p?.type !== 'text') : -1;
    if (part >= 0) return openaiError(res, 400, `Invalid value: '${m.content[part]?.type}'. Supported values are: 'text'.`, 'invalid_value');
  }
  const last = body.messages.at(-1);
  const echoed = last.role === 'tool' ? { ...body, messages: [...body.messages.slice(0, -1), { role: 'user', content: last.content }] } : body;
  const { promptTokens, pieces, finish } = tokensFor(echoed);
  const call = Array.isArray(body.tools) && body.tools.length > 0 && last.role !== 'tool' ? toolCallFor(body) : null;
  const completionTokens = call ? 12 : pieces.length;
  const usage = {
    prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens,
    prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
    completion_tokens_details: { reasoning_tokens: 0, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 },
  };
  const base = { id: `chatcmpl-${Date.now().toString(36)}`, created: Math.floor(Date.now() / 1000), model: `${body.model}-2024-07-18`, system_fingerprint: 'fp_fake' };
  if (!body.stream) {
    const message = call ? { role: 'assistant', content: null, tool_calls: [call], refusal: null, annotations: [] } : { role: 'assistant', content: pieces.join(''), refusal: null, annotations: [] };
    return sendJson(res, 200, { ...base, object: 'chat.completion', choices: [{ index: 0, message, logprobs: null, finish_reason: call ? 'tool_calls' : finish }], usage, service_tier: 'default' });
  }
  const withUsage = body.stream_options?.include_usage === true;
  res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8' });
  const send = (choices, extra = {}) => res.write(`data: ${JSON.stringify({ ...base, object: 'chat.completion.chunk', choices, ...(withUsage ? { usage: null } : {}), ...extra })}\n\n`);
  const delta = (d, finish_reason = null) => [{ index: 0, delta: d, logprobs: null, finish_reason }];
  if (call) {
    send(delta({ role: 'assistant', content: null, tool_calls: [{ index: 0, id: call.id, type: 'function', function: { name: call.function.name, arguments: '' } }], refusal: null }));
    for (const part of argumentPieces(call)) send(delta({ tool_calls: [{ index: 0, function: { arguments: part } }] }));
    send(delta({}, 'tool_calls'));
  } else {
    send(delta({ role: 'assistant', content: '', refusal: null }));
    const slowMs = Number(/\[slow:(\d+)\]/.exec(messageText(last.content))?.[1] ?? 0);
    for (const piece of pieces) {
      if (slowMs) await sleep(slowMs);
      send(delta({ content: piece }));
    }
    send(delta({}, finish));
  }
  if (withUsage) send([], { usage });
  res.write('data: [DONE]\n\n');
  res.end();
}

/** Fails a chat call the way `provider` fails, with `status` (and `retry-after` on 429s). */
function failAs(provider, res, { status, retry_after: retryAfter, message }) {
  const headers = retryAfter !== undefined ? { 'retry-after': String(retryAfter) } : {};
  const text = message ?? (status === 429 ? 'Rate limit reached' : status === 401 ? 'invalid credentials' : status === 529 ? 'Overloaded' : 'Internal server error');
  if (provider === 'anthropic') {
    const types = { 400: 'invalid_request_error', 401: 'authentication_error', 429: 'rate_limit_error', 529: 'overloaded_error' };
    return sendJson(res, status, { type: 'error', error: { type: types[status] ?? 'api_error', message: text } }, headers);
  }
  if (provider === 'google') {
    const codes = { 400: 'INVALID_ARGUMENT', 401: 'UNAUTHENTICATED', 429: 'RESOURCE_EXHAUSTED', 503: 'UNAVAILABLE' };
    return sendJson(res, status, { error: { code: status, message: text, status: codes[status] ?? 'INTERNAL' } }, headers);
  }
  if (provider === 'openai') {
    const types = { 400: 'invalid_request_error', 401: 'invalid_request_error', 429: 'requests' };
    return openaiError(res, status, text, null, types[status] ?? 'server_error', headers);
  }
  return sendJson(res, status, errorBody(status, text), headers);
}

function anthropicError(res, status, type, message) {
  return sendJson(res, status, { type: 'error', error: { type, message } });
}

/** What is wrong with a content block of a turn by `role`, as Anthropic names it (`null`: nothing). */
function anthropicBlockError(block, role) {
  const kinds = role === 'user'
    ? ['text', 'image', 'document', 'search_result', 'tool_result']
    : ['text', 'tool_use', 'thinking', 'redacted_thinking', 'server_tool_use', 'web_search_tool_result'];
  if (!kinds.includes(block?.type)) return `type: Input tag '${block?.type}' found using 'type' does not match any of the expected tags: ${kinds.map((k) => `'${k}'`).join(', ')}`;
  if (block.type !== 'document') return null;
  const source = block.source ?? {};
  if (source.type === 'base64') {
    if (source.media_type !== 'application/pdf') return "source.base64.media_type: Input should be 'application/pdf'";
    return typeof source.data === 'string' && source.data ? null : 'source.base64.data: Field required';
  }
  if (source.type === 'text') return source.media_type === 'text/plain' && typeof source.data === 'string' ? null : "source.text.media_type: Input should be 'text/plain'";
  if (source.type === 'content' || source.type === 'url' || source.type === 'file') return null;
  return "source: Input tag does not match any of the expected tags: 'base64', 'content', 'text', 'url', 'file'";
}

function blockText(content) {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  return content.map((b) => (b.type === 'text' ? b.text : b.type === 'tool_result' ? (typeof b.content === 'string' ? b.content : blockText(b.content)) : '')).join(' ');
}

/**
 * Anthropic's Messages API (`POST /v1/messages`), validated like the real one: `x-api-key`,
 * `anthropic-version`, `max_tokens` required, `tool_choice` by its tag, only user/assistant roles (a `system` role in
 * `messages` is refused), starting with user and alternating, known `anthropic-beta` values only.
 * Extended thinking (`thinking: {type: "enabled", budget_tokens >= 1024 < max_tokens}`) answers with a
 * signed thinking block first; a thinking block sent back must carry its signature unchanged, and with
 * thinking on, the assistant turn before a tool result must start with its thinking. Answers "Echo: <last user text>",
 * or a `get_weather` tool call when tools are offered and the last user turn is not a tool result.
 * Usage: input = ceil(chars / 4) + 3 per message (+ the system text), output = one per word.
 */
function geminiError(res, status, code, message) {
  return sendJson(res, status, { error: { code: status, message, status: code } });
}

const partsText = (parts) => (Array.isArray(parts) ? parts.map((p) => p.text ?? (p.functionResponse ? String(p.functionResponse.response?.content ?? JSON.stringify(p.functionResponse.response)) : '')).join(' ') : '');

/**
 * Gemini's `models/{model}:generateContent` and `:streamGenerateContent?alt=sse`, validated like the
 * real API: `x-goog-api-key`, non-empty `contents`, roles `user` and `model` only ("assistant" is
 * refused), `parts` arrays. Answers "Echo: <last user text>", or a function call when tools are
 * declared and the last turn is not a function response; in JSON mode (`responseMimeType`), that text as
 * JSON, under the schema's first property. Tokens: as the other fakes. Gemini 3 models sign each answer's
 * first function call (`thoughtSignature`) and, as Gemini 3 does, refuse a model turn whose first call
 * comes back without a signature (one of theirs, or Google's stand-in `skip_thought_signature_validator`).
 */
async function gemini(req, res, url, body) {
  const [, model, method] = url.pathname.match(/^\/v1beta\/models\/([^:]+):(\w+)$/) ?? [];
  const key = req.headers['x-goog-api-key'];
  if (!key) return geminiError(res, 403, 'PERMISSION_DENIED', 'Method doesn\'t allow unregistered callers.');
  if (key !== FAKE_GOOGLE_KEY) {
    return sendJson(res, 400, { error: { code: 400, message: 'API key not valid. Please pass a valid API key.', status: 'INVALID_ARGUMENT', details: [{ '@type': 'type.googleapis.com/google.rpc.ErrorInfo', reason: 'API_KEY_INVALID', domain: 'googleapis.com' }] } });
  }
  if (!priceOf(`google/${model}`)) return geminiError(res, 404, 'NOT_FOUND', `models/${model} is not found`);
  if (!['generateContent', 'streamGenerateContent'].includes(method)) return geminiError(res, 404, 'NOT_FOUND', `unknown method ${method}`);
  if (!body || !Array.isArray(body.contents) || body.contents.length === 0) return geminiError(res, 400, 'INVALID_ARGUMENT', '* GenerateContentRequest.contents: contents is not specified');
  for (const c of body.contents) {
    if (c.role !== 'user' && c.role !== 'model') return geminiError(res, 400, 'INVALID_ARGUMENT', 'Please use a valid role: user, model.');
    if (!Array.isArray(c.parts) || c.parts.length === 0) return geminiError(res, 400, 'INVALID_ARGUMENT', '* GenerateContentRequest.contents.parts: contents.parts must not be empty.');
  }
  for (const f of ['messages', 'max_tokens', 'model', 'stream']) {
    if (f in body) return geminiError(res, 400, 'INVALID_ARGUMENT', `Invalid JSON payload received. Unknown name "${f}": Cannot find field.`);
  }
  const signs = /^gemini-([3-9]|\d\d)/.test(model);
  for (const [i, c] of body.contents.entries()) {
    const first = c.role === 'model' ? c.parts.findIndex((p) => p.functionCall) : -1;
    if (!signs || first < 0) continue;
    const signature = c.parts[first].thoughtSignature;
    if (signature === undefined) {
      return geminiError(res, 400, 'INVALID_ARGUMENT', `Function call is missing a thought_signature in functionCall parts. This is required for tools to work correctly, and missing thought_signature may lead to degraded model performance. Additional data, function call \`default_api:${c.parts[first].functionCall.name}\` , position ${i + 1}. Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more details.`);
    }
    if (signature !== 'skip_thought_signature_validator' && !signature.startsWith(GEMINI_SIGNATURE)) {
      return geminiError(res, 400, 'INVALID_ARGUMENT', 'Corrupted thought signature.');
    }
  }
  const last = body.contents.at(-1);
  const chars = body.contents.reduce((n, c) => n + partsText(c.parts).length, 0) + partsText(body.systemInstruction?.parts).length;
  const prompt = Math.ceil(chars / 4) + 3 * body.contents.length;
  const answered = last.parts.some((p) => p.functionResponse);
  const declared = body.tools?.[0]?.functionDeclarations ?? [];
  // Like Gemini: `parameters` takes only its OpenAPI subset; JSON Schema goes in `parametersJsonSchema`.
  const openApiOnly = declared.find((d) => d.parameters && JSON.stringify(d.parameters).includes('"additionalProperties"'));
  if (openApiOnly) return geminiError(res, 400, 'INVALID_ARGUMENT', `Invalid JSON payload received. Unknown name "additionalProperties" at 'tools[0].function_declarations[0].parameters': Cannot find field.`);
  const call = declared.length > 0 && !answered ? { functionCall: { name: declared[0].name, args: { location: 'Paris', unit: 'celsius' } } } : null;
  if (call && signs) call.thoughtSignature = `${GEMINI_SIGNATURE}${randomBytes(12).toString('base64')}`;
  // JSON mode: the answer is JSON, shaped by `responseJsonSchema` (JSON Schema) when given; `responseSchema`
  // takes only Gemini's OpenAPI subset.
  const config = body.generationConfig ?? {};
  if (config.responseSchema && JSON.stringify(config.responseSchema).includes('"additionalProperties"')) {
    return geminiError(res, 400, 'INVALID_ARGUMENT', `Invalid JSON payload received. Unknown name "additionalProperties" at 'generation_config.response_schema': Cannot find field.`);
  }
  if ((config.responseJsonSchema || config.responseSchema) && config.responseMimeType !== 'application/json') {
    return geminiError(res, 400, 'INVALID_ARGUMENT', 'responseMimeType must be application/json when a response schema is set');
  }
  const json = config.responseMimeType === 'application/json';
  let words = ['Echo:', ...partsText(last.parts).split(/\s+/).filter(Boolean)].slice(0, 64);
  if (json && !call) {
    const key = Object.keys((config.responseJsonSchema ?? config.responseSchema)?.properties ?? {})[0] ?? 'echo';
    words = [JSON.stringify({ [key]: words.join(' ') })];
  }
  let finish = 'STOP';
  const max = body.generationConfig?.maxOutputTokens;
  if (Number.isInteger(max) && words.length > max) {
    words = words.slice(0, max);
    finish = 'MAX_TOKENS';
  }
  const output = call ? 12 : words.length;
  const usageMetadata = { promptTokenCount: prompt, candidatesTokenCount: output, totalTokenCount: prompt + output };
  const responseId = `gem-${Date.now().toString(36)}`;
  const answer = (parts, finishReason, usage) => ({
    candidates: [{ content: { role: 'model', parts }, ...(finishReason ? { finishReason } : {}), index: 0 }],
    usageMetadata: usage, modelVersion: model, responseId,
  });
  if (method === 'generateContent') return sendJson(res, 200, answer(call ? [call] : [{ text: words.join(' ') }], finish, usageMetadata));
  if (url.searchParams.get('alt') !== 'sse') return geminiError(res, 400, 'INVALID_ARGUMENT', 'this fake streams only with alt=sse');
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  const send = (data) => res.write(`data: ${JSON.stringify(data)}\r\n\r\n`);
  const partial = { promptTokenCount: prompt, totalTokenCount: prompt };
  if (call) send(answer([call], finish, usageMetadata));
  else {
    const slowMs = Number(/\[slow:(\d+)\]/.exec(words.join(' '))?.[1] ?? 0);
    for (const [i, w] of words.entries()) {
      if (slowMs && i > 0) await sleep(slowMs);
      send(answer([{ text: i === 0 ? w : ` ${w}` }], i === words.length - 1 ? finish : null, i === words.length - 1 ? usageMetadata : partial));
    }
  }
  res.end();
}

/** POST /v1/messages/count_tokens, as Anthropic counts: the same input tokens `/v1/messages` would bill. */
function anthropicCount(req, res, body) {
  if (req.headers['x-api-key'] !== FAKE_ANTHROPIC_KEY) return anthropicError(res, 401, 'authentication_error', 'invalid x-api-key');
  if (!req.headers['anthropic-version']) return anthropicError(res, 400, 'invalid_request_error', 'anthropic-version: header is required');
  if (!body || !anthropicKnows(body.model)) return anthropicError(res, 404, 'not_found_error', `model: ${body?.model}`);
  if (!Array.isArray(body.messages) || body.messages.length === 0) return anthropicError(res, 400, 'invalid_request_error', 'messages: Field required');
  for (const f of ['max_tokens', 'stream', 'temperature']) {
    if (f in body) return anthropicError(res, 400, 'invalid_request_error', `${f}: Extra inputs are not permitted`);
  }
  const chars = body.messages.reduce((n, m) => n + blockText(m.content).length, 0) + blockText(body.system ?? '').length;
  const documents = body.messages.reduce((n, m) => n + documentsIn(m.content), 0);
  return sendJson(res, 200, { input_tokens: Math.ceil(chars / 4) + 3 * body.messages.length + DOCUMENT_TOKENS * documents });
}

// Anthropic's own ids for models the catalogue names as OpenRouter does (dotted): the API knows these too.
const ANTHROPIC_OWN_IDS = new Set(['claude-3-5-sonnet-20241022']);
/** Whether Anthropic's API knows `model`: its ids have no dots (`claude-3-5-sonnet-latest`), so OpenRouter's `claude-3.5-sonnet` is not one of them. */
const anthropicKnows = (model) => typeof model === 'string' && !model.includes('.') && (ANTHROPIC_OWN_IDS.has(model) || priceOf(`anthropic/${model}`) !== null);

async function anthropic(req, res, body) {
  if (req.headers['x-api-key'] !== FAKE_ANTHROPIC_KEY) return anthropicError(res, 401, 'authentication_error', 'invalid x-api-key');
  if (!req.headers['anthropic-version']) return anthropicError(res, 400, 'invalid_request_error', 'anthropic-version: header is required');
  if (!body || typeof body !== 'object') return anthropicError(res, 400, 'invalid_request_error', 'Invalid JSON body');
  if (!anthropicKnows(body.model)) return anthropicError(res, 404, 'not_found_error', `model: ${body.model}`);
  if (!Number.isInteger(body.max_tokens) || body.max_tokens < 1) return anthropicError(res, 400, 'invalid_request_error', 'max_tokens: Field required');
  if (!Array.isArray(body.messages) || body.messages.length === 0) return anthropicError(res, 400, 'invalid_request_error', 'messages: Field required');
  for (const [i, m] of body.messages.entries()) {
    if (m.role !== 'user' && m.role !== 'assistant') {
      return anthropicError(res, 400, 'invalid_request_error', `messages.${i}.role: Input should be 'user' or 'assistant'`);
    }
    if (i === 0 && m.role !== 'user') return anthropicError(res, 400, 'invalid_request_error', 'messages: first message must use the "user" role');
    if (i > 0 && body.messages[i - 1].role === m.role) return anthropicError(res, 400, 'invalid_request_error', 'messages: roles must alternate between "user" and "assistant"');
  }
  if (body.system !== undefined && typeof body.system !== 'string' && !Array.isArray(body.system)) return anthropicError(res, 400, 'invalid_request_error', 'system: Input should be a valid string');
  for (const f of ['frequency_penalty', 'presence_penalty', 'logprobs', 'n', 'response_format', 'stream_options', 'reasoning', 'parallel_tool_calls']) {
    if (f in body) return anthropicError(res, 400, 'invalid_request_error', `${f}: Extra inputs are not permitted`);
  }
  // tool_choice: auto | any | tool (with its name) take `disable_parallel_tool_use`; none takes nothing more.
  if (body.tool_choice !== undefined) {
    const choice = body.tool_choice;
    const allowed = { auto: ['disable_parallel_tool_use'], any: ['disable_parallel_tool_use'], tool: ['name', 'disable_parallel_tool_use'], none: [] }[choice?.type];
    if (!allowed) return anthropicError(res, 400, 'invalid_request_error', "tool_choice: Input tag does not match any of the expected tags: 'auto', 'any', 'tool', 'none'");
    const extra = Object.keys(choice).find((k) => k !== 'type' && !allowed.includes(k));
    if (extra) return anthropicError(res, 400, 'invalid_request_error', `tool_choice.${choice.type}.${extra}: Extra inputs are not permitted`);
  }
  const betas = String(req.headers['anthropic-beta'] ?? '').split(',').map((b) => b.trim()).filter(Boolean);
  const unknownBetas = betas.filter((b) => !ANTHROPIC_BETAS.has(b));
  if (unknownBetas.length) return anthropicError(res, 400, 'invalid_request_error', `Unexpected value(s) \`${unknownBetas.join(', ')}\` for the \`anthropic-beta\` header.`);
  const last = body.messages.at(-1);
  const answeredTool = Array.isArray(last.content) && last.content.some((b) => b.type === 'tool_result');
  // Adaptive thinking and an effort are Claude 4.6 and later's (the effort Opus 4.5's too); older models refuse them.
  const adaptiveModel = /^claude-(opus|sonnet|haiku)-(4-[6-9]|[5-9])/.test(body.model);
  const adaptive = body.thinking?.type === 'adaptive';
  if (adaptive && !adaptiveModel) return anthropicError(res, 400, 'invalid_request_error', `thinking.type: adaptive thinking is not supported on ${body.model}`);
  const thinking = body.thinking?.type === 'enabled' || adaptive ? body.thinking : null;
  if (body.thinking !== undefined && !thinking && body.thinking?.type !== 'disabled') return anthropicError(res, 400, 'invalid_request_error', "thinking: Input tag does not match any of the expected tags: 'adaptive', 'disabled', 'enabled'");
  if (thinking) {
    const extra = Object.keys(thinking).find((k) => !['type', 'budget_tokens', 'display'].includes(k) || (adaptive && k === 'budget_tokens'));
    if (extra) return anthropicError(res, 400, 'invalid_request_error', `thinking.${thinking.type}.${extra}: Extra inputs are not permitted`);
    if (thinking.display !== undefined && !['summarized', 'omitted'].includes(thinking.display)) return anthropicError(res, 400, 'invalid_request_error', "thinking.display: Input should be 'summarized' or 'omitted'");
  }
  if (thinking && !adaptive) {
    if (!Number.isInteger(thinking.budget_tokens) || thinking.budget_tokens < 1024) return anthropicError(res, 400, 'invalid_request_error', 'thinking.enabled.budget_tokens: Input should be greater than or equal to 1024');
    if (body.max_tokens <= thinking.budget_tokens) return anthropicError(res, 400, 'invalid_request_error', '`max_tokens` must be greater than `thinking.budget_tokens`.');
  }
  if (thinking && body.temperature !== undefined && body.temperature !== 1) return anthropicError(res, 400, 'invalid_request_error', '`temperature` may only be set to 1 when thinking is enabled.');
  // Structured outputs (`output_config.format`) and an effort: Claude 4.5 and later (the fake: 4.6 and later).
  const format = body.output_config?.format;
  if (format !== undefined) {
    if (!adaptiveModel) return anthropicError(res, 400, 'invalid_request_error', `output_config.format: structured outputs are not supported on ${body.model}`);
    if (format?.type !== 'json_schema' || typeof format.schema !== 'object') return anthropicError(res, 400, 'invalid_request_error', "output_config.format: Input tag does not match the expected tag: 'json_schema'");
  }
  if (body.output_config?.effort !== undefined) {
    if (!adaptiveModel) return anthropicError(res, 400, 'invalid_request_error', `output_config.effort: not supported on ${body.model}`);
    if (!['low', 'medium', 'high', 'max'].includes(body.output_config?.effort)) return anthropicError(res, 400, 'invalid_request_error', "output_config.effort: Input should be 'low', 'medium', 'high' or 'max'");
  }
  for (const [i, m] of body.messages.entries()) {
    for (const [j, b] of (Array.isArray(m.content) ? m.content : []).entries()) {
      if (b.type === 'thinking' && b.signature !== thinkingSignature(b.thinking)) return anthropicError(res, 400, 'invalid_request_error', `messages.${i}.content.${j}: Invalid \`signature\` in \`thinking\` block`);
      const wrong = anthropicBlockError(b, m.role);
      if (wrong) return anthropicError(res, 400, 'invalid_request_error', `messages.${i}.content.${j}.${wrong}`);
      const inner = b.type === 'tool_result' && Array.isArray(b.content) ? b.content : [];
      for (const [k, c] of inner.entries()) {
        const bad = ['text', 'image', 'document', 'search_result'].includes(c?.type) ? anthropicBlockError(c, 'user') : `type: Input tag '${c?.type}' does not match the tags a tool result takes`;
        if (bad) return anthropicError(res, 400, 'invalid_request_error', `messages.${i}.content.${j}.content.${k}.${bad}`);
      }
    }
  }
  if (thinking && answeredTool) {
    const n = body.messages.length - 2;
    const first = body.messages[n]?.content?.[0]?.type;
    if (first !== 'thinking' && first !== 'redacted_thinking') {
      return anthropicError(res, 400, 'invalid_request_error', `messages.${n}.content.0.type: Expected \`thinking\` or \`redacted_thinking\`, but found \`${first}\`. When \`thinking\` is enabled, a final \`assistant\` message must start with a thinking block (preceeding the lastmost set of \`tool_use\` and \`tool_result\` blocks).`);
    }
  }
  const chars = body.messages.reduce((n, m) => n + blockText(m.content).length, 0) + blockText(body.system ?? '').length;
  const documents = body.messages.reduce((n, m) => n + documentsIn(m.content), 0);
  const input = Math.ceil(chars / 4) + 3 * body.messages.length + DOCUMENT_TOKENS * documents;
  const callTool = Array.isArray(body.tools) && body.tools.length > 0 && !answeredTool;
  let words = ['Echo:', ...blockText(last.content).split(/\s+/).filter(Boolean)].slice(0, 64);
  // A structured output: that text as JSON, under the schema's first property.
  if (format) words = [JSON.stringify({ [Object.keys(format.schema.properties ?? {})[0] ?? 'echo']: words.join(' ') })];
  let stop = 'end_turn';
  let stopSequence = null;
  const at = words.findIndex((w) => (body.stop_sequences ?? []).includes(w));
  if (at >= 0) {
    [words, stop, stopSequence] = [words.slice(0, at), 'stop_sequence', words[at]];
  }
  if (words.length > body.max_tokens) {
    words = words.slice(0, body.max_tokens);
    [stop, stopSequence] = ['max_tokens', null];
  }
  const id = `msg_fake_${Date.now().toString(36)}`;
  const tool = callTool ? { type: 'tool_use', id: `toolu_fake_${body.messages.length}`, name: body.tools[0].name, input: { location: 'Paris', unit: 'celsius' } } : null;
  // With thinking on, the answer starts with a signed thinking block; its words are output tokens.
  const thought = thinking ? `Thinking about: ${blockText(last.content).slice(0, 40)}` : null;
  const output = (callTool ? 12 : words.length) + (thought ? thought.split(' ').length : 0);
  if (callTool) stop = 'tool_use';
  const lastText = blockText(last.content);
  const cutAfter = Number(/\[cut:(\d+)\]/.exec(lastText)?.[1] ?? Infinity);
  const cacheWrite = Number(/\[cache_write:(\d+)\]/.exec(lastText)?.[1] ?? 0);
  const slowMs = Number(/\[slow:(\d+)\]/.exec(lastText)?.[1] ?? 0);
  const usage = { input_tokens: input, output_tokens: output, cache_creation_input_tokens: cacheWrite, cache_read_input_tokens: 0 };
  if (!body.stream) {
    const content = tool ? [tool] : [{ type: 'text', text: words.join(' ') }];
    if (thought) content.unshift({ type: 'thinking', thinking: thought, signature: thinkingSignature(thought) });
    return sendJson(res, 200, { id, type: 'message', role: 'assistant', model: body.model, content, stop_reason: stop, stop_sequence: stopSequence, usage });
  }
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  const send = (event, data) => res.write(`event: ${event}\ndata: ${JSON.stringify({ type: event, ...data })}\n\n`);
  send('message_start', { message: { id, type: 'message', role: 'assistant', model: body.model, content: [], stop_reason: null, usage: { ...usage, output_tokens: 1 } } });
  send('ping', {});
  let index = 0;
  if (thought) {
    send('content_block_start', { index, content_block: { type: 'thinking', thinking: '', signature: '' } });
    for (const [i, w] of thought.split(' ').entries()) send('content_block_delta', { index, delta: { type: 'thinking_delta', thinking: i === 0 ? w : ` ${w}` } });
    send('content_block_delta', { index, delta: { type: 'signature_delta', signature: thinkingSignature(thought) } });
    send('content_block_stop', { index });
    index += 1;
  }
  if (tool) {
    send('content_block_start', { index, content_block: { ...tool, input: {} } });
    for (const piece of ['', '{"location":', ' "Paris", ', '"unit": "celsius"}']) send('content_block_delta', { index, delta: { type: 'input_json_delta', partial_json: piece } });
  } else {
    send('content_block_start', { index, content_block: { type: 'text', text: '' } });
    for (const [i, w] of words.entries()) {
      if (i >= cutAfter) return res.destroy();
      // Apart, so the deltas before the cut reach the client before the socket closes.
      if (Number.isFinite(cutAfter)) await new Promise((r) => setTimeout(r, 50));
      if (slowMs) await sleep(slowMs);
      send('content_block_delta', { index, delta: { type: 'text_delta', text: i === 0 ? w : ` ${w}` } });
    }
  }
  send('content_block_stop', { index });
  send('message_delta', { delta: { stop_reason: stop, stop_sequence: stopSequence }, usage: { output_tokens: output } });
  send('message_stop', {});
  res.end();
}

/** OpenRouter's key-management API, in memory. */
function keyManagement() {
  const keys = new Map();
  const failures = [];
  let delayMs = 0;
  const view = (k) => ({ ...k.data, limit_remaining: k.data.limit === null ? null : Math.max(0, k.data.limit - k.data.usage) });
  const checkFields = (body, creating) => {
    if (!body || typeof body !== 'object') return 'Invalid JSON body';
    if (creating && (typeof body.name !== 'string' || !body.name.trim())) return 'name is required';
    if ('limit' in body && body.limit !== null && !(typeof body.limit === 'number' && body.limit >= 0)) return 'limit must be a non-negative number or null';
    if ('limit_reset' in body && !RESETS.has(body.limit_reset)) return 'limit_reset must be daily, weekly, monthly or null';
    if ('disabled' in body && typeof body.disabled !== 'boolean') return 'disabled must be a boolean';
    return null;
  };
  return {
    keys,
    fail(status, times = 1) {
      for (let i = 0; i < times; i++) failures.push(status);
    },
    delay(ms) {
      delayMs = ms;
    },
    async handle(req, res, url, body) {
      if (delayMs) await sleep(delayMs);
      if (failures.length) {
        const status = failures.shift();
        return sendJson(res, status, errorBody(status, status >= 500 ? 'Internal Server Error' : 'Request failed'));
      }
      const hash = url.pathname.split('/keys/')[1];
      if (!hash) {
        if (req.method === 'GET') {
          // Like OpenRouter: disabled keys only when asked for.
          const offset = Number(url.searchParams.get('offset') ?? 0);
          const listed = [...keys.values()].filter((k) => url.searchParams.get('include_disabled') === 'true' || !k.data.disabled);
          return sendJson(res, 200, { data: listed.slice(offset, offset + 100).map(view) });
        }
        if (req.method === 'POST') {
          const bad = checkFields(body, true);
          if (bad) return sendJson(res, 400, errorBody(400, bad));
          const text = `sk-or-v1-${randomBytes(32).toString('hex')}`;
          const h = createHash('sha256').update(text).digest('hex');
          const now = new Date().toISOString();
          const data = { hash: h, name: body.name, label: `${text.slice(0, 11)}...${text.slice(-3)}`, disabled: false, limit: body.limit ?? null, limit_reset: body.limit_reset ?? null, usage: 0, created_at: now, updated_at: null };
          keys.set(h, { data });
          return sendJson(res, 201, { data: view({ data }), key: text });
        }
        return sendJson(res, 405, errorBody(405, 'Method not allowed'));
      }
      const key = keys.get(hash);
      if (!key) return sendJson(res, 404, errorBody(404, 'API key not found'));
      if (req.method === 'GET') return sendJson(res, 200, { data: view(key) });
      if (req.method === 'DELETE') {
        keys.delete(hash);
        return sendJson(res, 200, { deleted: true });
      }
      if (req.method === 'PATCH') {
        const bad = checkFields(body, false);
        if (bad) return sendJson(res, 400, errorBody(400, bad));
        for (const f of ['name', 'disabled', 'limit', 'limit_reset']) if (f in body) key.data[f] = body[f];
        key.data.updated_at = new Date().toISOString();
        return sendJson(res, 200, { data: view(key) });
      }
      return sendJson(res, 405, errorBody(405, 'Method not allowed'));
    },
  };
}

/**
 * Starts the fake. `apiKey`: the only upstream key accepted for inference (any bearer when unset);
 * `provisioningKey`: the only key accepted by the key-management API (which refuses inference keys).
 */
export function startFakeUpstream({ port = 0, host = '127.0.0.1', apiKey, provisioningKey = FAKE_PROVISIONING_KEY } = {}) {
  const requests = [];
  const management = keyManagement();
  const faults = new Map(); // provider → [{status, retry_after}], taken one per chat call
  const fault = (provider) => faults.get(provider)?.shift();
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://fake');
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const raw = Buffer.concat(chunks).toString('utf8');
    if (url.pathname === '/__requests') {
      if (req.method === 'DELETE') requests.length = 0;
      return sendJson(res, 200, { data: requests });
    }
    let body = null;
    try {
      body = raw ? JSON.parse(raw) : null;
    } catch {
      body = undefined;
    }
    if (url.pathname === '/__fail') {
      const queue = faults.get(body.provider) ?? [];
      for (let i = 0; i < (body.times ?? 1); i++) queue.push({ status: body.status, retry_after: body.retry_after, message: body.message });
      faults.set(body.provider, queue);
      return sendJson(res, 200, { ok: true });
    }
    if (url.pathname === '/__keys/fail') {
      management.fail(body.status, body.times ?? 1);
      return sendJson(res, 200, { ok: true });
    }
    if (url.pathname === '/__keys/delay') {
      management.delay(body.ms ?? 0);
      return sendJson(res, 200, { ok: true });
    }
    const usage = url.pathname.match(/^\/__keys\/([0-9a-f]+)\/usage$/);
    if (usage) {
      const key = management.keys.get(usage[1]);
      if (!key) return sendJson(res, 404, errorBody(404, 'API key not found'));
      key.data.usage = body.usage;
      return sendJson(res, 200, { ok: true });
    }
    requests.push({ method: req.method, path: url.pathname, headers: req.headers, body: body === undefined ? raw : body, at: Date.now() });
    if (requests.length > 500) requests.shift();

    const provider = req.method !== 'POST' ? null
      : url.pathname === '/v1/messages' ? 'anthropic'
      : url.pathname.startsWith('/v1beta/models/') ? 'google'
      : url.pathname === '/openai/v1/chat/completions' ? 'openai'
      : url.pathname.endsWith('/chat/completions') ? 'openrouter' : null;
    if (provider === 'openrouter' && Array.isArray(body?.models) && body.models.length > 0) {
      // OpenRouter's fallbacks: each model that fails hands over to the next one in `models`.
      const list = [...new Set([body.model, ...body.models])];
      for (let i = 0; ; i++) {
        const failed = fault(provider);
        if (!failed) {
          body = { ...body, model: list[i] };
          break;
        }
        if (i === list.length - 1) return failAs(provider, res, failed);
      }
    }
    const injected = provider && fault(provider);
    if (injected) return failAs(provider, res, injected);
    if (provider === 'anthropic') return anthropic(req, res, body);
    if (provider === 'google') return gemini(req, res, url, body);
    if (provider === 'openai') return openai(req, res, body);
    if (req.method === 'POST' && url.pathname === '/v1/messages/count_tokens') return anthropicCount(req, res, body);
    if (req.method === 'POST' && url.pathname.endsWith('/embeddings')) {
      const by = url.pathname === '/openai/v1/embeddings' ? 'openai' : 'openrouter';
      const failed = fault(by);
      if (failed) return failAs(by, res, failed);
    }
    if (req.method === 'POST' && url.pathname === '/openai/v1/embeddings') {
      if ((req.headers.authorization ?? '') !== `Bearer ${FAKE_OPENAI_KEY}`) return openaiError(res, 401, 'Incorrect API key provided.', 'invalid_api_key');
      return embeddings(res, body, { native: true });
    }
    const auth = req.headers.authorization ?? '';
    const bearer = auth.startsWith('Bearer ') ? auth.slice(7) : '';
    if (/\/keys(\/|$)/.test(url.pathname)) {
      if (bearer !== provisioningKey) return sendJson(res, 401, errorBody(401, 'Only provisioning keys can manage keys'));
      if (body === undefined) return sendJson(res, 400, errorBody(400, 'Invalid JSON body'));
      return management.handle(req, res, url, body);
    }
    if (!bearer || bearer === provisioningKey || (apiKey && bearer !== apiKey)) return sendJson(res, 401, errorBody(401, 'No auth credentials found'));
    if (req.method === 'GET' && url.pathname.endsWith('/models')) return models(res, url);
    if (req.method === 'GET' && url.pathname.endsWith('/generation')) return generation(res, url.searchParams.get('id'));
    if (req.method === 'POST' && url.pathname.endsWith('/chat/completions')) {
      if (body === undefined) return sendJson(res, 400, errorBody(400, 'Invalid JSON body'));
      return chat(req, res, body, { apiKey });
    }
    if (req.method === 'POST' && url.pathname.endsWith('/embeddings')) return embeddings(res, body, { native: false });
    sendJson(res, 404, errorBody(404, `Not found: ${req.method} ${url.pathname}`));
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      const { port: bound } = server.address();
      resolve({
        port: bound,
        url: `http://${host}:${bound}/api/v1`,
        requests,
        keys: management.keys,
        close: () => new Promise((r) => { server.closeAllConnections?.(); server.close(() => r()); }),
      });
    });
  });
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const arg = (name) => {
    const i = process.argv.indexOf(`--${name}`);
    return i > 0 ? process.argv[i + 1] : undefined;
  };
  const fake = await startFakeUpstream({ port: Number(arg('port') ?? process.env.FAKE_UPSTREAM_PORT ?? 8788), apiKey: arg('key') ?? process.env.FAKE_UPSTREAM_KEY });
  console.log(`fake upstream (OpenRouter API) listening on ${fake.url}`);
  const stop = () => fake.close().then(() => process.exit(0));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
