#!/usr/bin/env node
/**
 * A streaming client for shardstream lists: Node >= 18, built-in fetch and
 * web streams, no dependency.
 *
 * A starting point for partners that read a list behind a shardstream
 * gateway. It asks for NDJSON (`Accept: application/x-ndjson`: one item per
 * line, the last line `{"meta":{...}}`), yields each item as its line
 * arrives, follows `meta.next_cursor` to the end of the list, reports the
 * shards that failed on each page, retries 429 and 503 answers after their
 * `Retry-After`, and never passes a cut stream off as a short list.
 *
 * As a module:
 *
 *     import { listItems, TruncatedResponse } from './shardstream-client.mjs';
 *
 *     const pages = [];
 *     const url = 'https://api.example.com/v3/events?sort=starts_at&limit=100';
 *     const key = process.env.SHARDSTREAM_KEY;
 *     for await (const item of listItems(url, { key, onPage: (p) => pages.push(p) })) {
 *       handle(item);
 *     }
 *     const failed = pages.flatMap((p) => p.failed);   // [{shard, error, items_delivered, ...}]
 *
 * Items are parsed with JSON.parse (numbers become JS numbers); pass
 * `raw: true` to get each item's line exactly as the gateway sent it.
 *
 * From the command line:
 *
 *     node shardstream-client.mjs URL [--key KEY] [--max-retries N] [--timeout SECONDS]
 *
 * URL is a full list URL, e.g. `http://127.0.0.1:8080/v3/events?sort=starts_at&limit=50`;
 * the key may also come from the SHARDSTREAM_KEY environment variable. Each
 * item is printed on stdout as one compact JSON line as it arrives; retries,
 * errors (with the X-Request-Id of the answer, to quote to support) and a
 * summary go to stderr:
 *
 *     pages: 5
 *     items: 240
 *     complete: false
 *     failed shard apac: truncated (items_delivered=30, page 1, request id 4f2c...)
 *
 * Exit codes:
 *
 *     0  every page was complete: the whole list, every shard answered
 *     1  the gateway could not be reached (connection refused, DNS, TLS, ...)
 *     2  bad command line
 *     3  some shard failed on some page (meta.complete was false); the failed
 *        shards are named on stderr. The cursors keep a failed shard's
 *        position, so following them to the end still delivers its items on
 *        a later page, but that page's part of the list missed them.
 *     4  a response was truncated: the stream ended (or broke) before its
 *        meta line; the items printed so far are not a complete page
 *     5  a 429 or 503 answer was still there after --max-retries retries
 *     6  an error answer (400, 401, 403, 404, 410, 502, 504, ...): its code
 *        and message are printed on stderr
 */

import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

const NDJSON = 'application/x-ndjson';
const USER_AGENT = 'shardstream-example-client/1.0 (node)';
const MAX_WAIT = 300; // seconds: never sleep longer for one Retry-After

export class ShardstreamError extends Error {
  constructor(message, { requestId = null, url = '', cause } = {}) {
    super(requestId ? `${message} (request id ${requestId})` : message, { cause });
    this.name = this.constructor.name;
    this.requestId = requestId;
    this.url = url;
  }

  get exitCode() {
    return 1;
  }
}

/** The stream ended before its meta line: the page is cut, not short. */
export class TruncatedResponse extends ShardstreamError {
  constructor(message, { items = 0, ...rest } = {}) {
    super(message, rest);
    this.items = items; // items of this page yielded before the cut
  }

  get exitCode() {
    return 4;
  }
}

/** 429 or 503 more times in a row than the client may retry. */
export class RetriesExhausted extends ShardstreamError {
  constructor(message, { status, code, ...rest }) {
    super(message, rest);
    this.status = status;
    this.code = code;
  }

  get exitCode() {
    return 5;
  }
}

/** Any other non-200 answer; `error` is the body's error object. */
export class ErrorAnswer extends ShardstreamError {
  constructor(message, { status, error, ...rest }) {
    super(message, rest);
    this.status = status;
    this.error = error;
    this.code = error?.code ?? null;
  }

  get exitCode() {
    return 6;
  }
}

/** Retry-After in seconds (a number or an HTTP date); 1 if absent or odd. */
export function retryAfterSeconds(value) {
  if (!value) return 1;
  let seconds = Number(value);
  if (!Number.isFinite(seconds)) {
    const when = Date.parse(value);
    if (Number.isNaN(when)) return 1;
    seconds = (when - Date.now()) / 1000;
  }
  return Math.min(Math.max(seconds, 0), MAX_WAIT);
}

const sleep = (seconds, signal) =>
  new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, seconds * 1000);
    signal?.addEventListener('abort', () => {
      clearTimeout(timer);
      reject(signal.reason);
    }, { once: true });
  });

// The meta line: {"meta": {"shards": ...}} and nothing else.
const isObject = (value) => value !== null && typeof value === 'object' && !Array.isArray(value);
function isMetaLine(value) {
  return isObject(value) && Object.keys(value).length === 1 && isObject(value.meta)
    && 'shards' in value.meta;
}

/**
 * Every item of the list at `url`, page after page, as its line arrives.
 *
 * Options: `key` (sent as `Authorization: Bearer KEY`), `maxRetries` (retries
 * of one page after a 429 or 503, default 5), `timeout` (seconds without
 * data before the page counts as truncated, default 60), `onPage(page)`
 * (called when a page's meta is in: `{number, url, requestId, items, meta,
 * complete, failed, retries}`), `onRetry({page, status, code, wait,
 * attempt, requestId})`, `raw` (yield each item's line as a string),
 * `signal` (an AbortSignal), `fetch` (another fetch implementation).
 *
 * Throws TruncatedResponse, RetriesExhausted, ErrorAnswer, or (network)
 * ShardstreamError.
 */
export async function* listItems(url, {
  key = null, maxRetries = 5, timeout = 60, onPage = null, onRetry = null, raw = false,
  signal = undefined, fetch: fetchImpl = globalThis.fetch,
} = {}) {
  let target = new URL(url);
  for (let number = 1; ; number++) {
    const meta = yield* page(target, number);
    const cursor = meta.next_cursor;
    if (cursor === null || cursor === undefined) return;
    // A cursor page takes only the cursor: it carries the filters, the sort
    // and the limit of the first page.
    target = new URL(target);
    target.search = '';
    target.searchParams.set('cursor', cursor);
  }

  async function* page(target, number) {
    const pageUrl = target.href;
    for (let attempt = 0; ; attempt++) {
      // Each wait for the gateway (headers, a chunk, an error body) is bounded
      // by `timeout`; the time the caller spends on an item is not counted.
      const idle = new AbortController();
      const both = signal && AbortSignal.any ? AbortSignal.any([signal, idle.signal]) : idle.signal;
      const bounded = async (promise) => {
        const timer = setTimeout(
          () => idle.abort(new Error(`no data from the gateway for ${timeout} s`)), timeout * 1000);
        try {
          return await promise();
        } finally {
          clearTimeout(timer);
        }
      };
      let response;
      const headers = { Accept: NDJSON, 'User-Agent': USER_AGENT };
      if (key) headers.Authorization = `Bearer ${key}`;
      try {
        response = await bounded(() => fetchImpl(pageUrl, { headers, signal: both }));
      } catch (e) {
        signal?.throwIfAborted();
        throw new ShardstreamError(`cannot get ${pageUrl}: ${e.cause?.message ?? e.message}`,
          { url: pageUrl, cause: e });
      }
      const requestId = response.headers.get('x-request-id');
      if (response.status === 200) {
        const info = { number, url: pageUrl, requestId, items: 0, retries: attempt };
        const meta = yield* readLines(response, info, bounded);
        Object.assign(info, {
          meta,
          failed: meta.shards?.failed ?? [],
          // `complete` is the gateway's own answer; without it, no failed shard.
          complete: meta.complete ?? (meta.shards?.failed ?? []).length === 0,
        });
        onPage?.(info);
        return meta;
      }
      let error;
      try {
        error = JSON.parse(await bounded(() => response.text())).error;
      } catch {
        error = undefined;
      }
      if (error === null || typeof error !== 'object') {
        error = { code: null, message: `HTTP ${response.status} ${response.statusText}` };
      }
      const what = `page ${number}: ${response.status} ${error.code}`;
      if (response.status !== 429 && response.status !== 503) {
        throw new ErrorAnswer(`${what}: ${error.message ?? ''}`,
          { status: response.status, error, requestId, url: pageUrl });
      }
      if (attempt >= maxRetries) {
        throw new RetriesExhausted(
          `${what} still, after ${maxRetries} retries: ${error.message ?? ''}`,
          { status: response.status, code: error.code, requestId, url: pageUrl });
      }
      const wait = retryAfterSeconds(response.headers.get('retry-after'));
      onRetry?.({ page: number, status: response.status, code: error.code, wait,
        attempt: attempt + 1, maxRetries, requestId });
      // 503 shards_unavailable: the same request again (the same cursor).
      await sleep(wait, signal);
    }
  }

  async function* readLines(response, info, bounded) {
    const cut = (why, cause) => new TruncatedResponse(
      `page ${info.number} truncated after ${info.items} items: ${why}`,
      { items: info.items, requestId: info.requestId, url: info.url, cause });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    let held = null; // a line that looks like the meta: it is, if nothing follows it
    let heldText = null;
    let finished = false;
    function* line(text) {
      if (text.trim() === '') return;
      let value;
      try {
        value = JSON.parse(text);
      } catch (e) {
        throw cut(`a line is not JSON (${e.message})`, e);
      }
      if (held !== null) { // the held line was an item after all
        info.items++;
        yield raw ? heldText : held;
        held = heldText = null;
      }
      if (isMetaLine(value)) {
        held = value;
        heldText = text;
      } else {
        info.items++;
        yield raw ? text : value;
      }
    }
    try {
      for (;;) {
        let chunk;
        try {
          chunk = await bounded(() => reader.read());
        } catch (e) {
          // undici: TypeError "terminated" when the connection closes before
          // the last chunk; an AbortError after the idle timeout.
          signal?.throwIfAborted();
          throw cut(`the stream broke (${e.cause?.message ?? e.message})`, e);
        }
        if (chunk.done) break;
        buffer += chunk.value;
        let nl;
        while ((nl = buffer.indexOf('\n')) >= 0) {
          const text = buffer.slice(0, nl);
          buffer = buffer.slice(nl + 1);
          yield* line(text);
        }
      }
      finished = true;
    } finally {
      if (!finished) reader.cancel().catch(() => {});
    }
    yield* line(buffer); // the gateway ends every line; be lenient about the last
    if (held === null) throw cut('the stream ended without its meta line');
    return held.meta;
  }
}

// -- command line ----------------------------------------------------------------

function usage(message) {
  process.stderr.write(`${message}\nusage: node shardstream-client.mjs URL [--key KEY] `
    + '[--max-retries N] [--timeout SECONDS]\n');
  return 2;
}

export async function main(argv) {
  let url = null;
  let key = process.env.SHARDSTREAM_KEY || null;
  let maxRetries = 5;
  let timeout = 60;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${arg} needs a value`);
      return argv[++i];
    };
    try {
      if (arg === '--key') key = value();
      else if (arg === '--max-retries') maxRetries = Number(value());
      else if (arg === '--timeout') timeout = Number(value());
      else if (arg === '-h' || arg === '--help') {
        usage('Print every item of a shardstream list.');
        return 0;
      }
      else if (arg.startsWith('-')) return usage(`unknown option ${arg}`);
      else if (url === null) url = arg;
      else return usage(`unexpected argument ${arg}`);
    } catch (e) {
      return usage(e.message);
    }
  }
  if (url === null) return usage('a list URL is required');
  if (!Number.isInteger(maxRetries) || maxRetries < 0) {
    return usage('--max-retries must be 0 or more');
  }
  if (!(timeout > 0)) return usage('--timeout must be a positive number');
  try {
    if (!['http:', 'https:'].includes(new URL(url).protocol)) throw new Error();
  } catch {
    return usage(`not an http(s) URL: ${url}`);
  }

  const err = (text) => process.stderr.write(`${text}\n`);
  const pages = [];
  let printed = 0;
  let code = 0;
  const onPage = (page) => {
    pages.push(page);
    for (const f of page.failed) {
      err(`page ${page.number}: shard ${f.shard} failed: ${f.error} `
        + `(request id ${page.requestId})`);
    }
  };
  const onRetry = (r) => err(`page ${r.page}: ${r.status} ${r.code}, retry ${r.attempt} of `
    + `${r.maxRetries} in ${r.wait} s (request id ${r.requestId})`);
  try {
    const options = { key, maxRetries, timeout, onPage, onRetry, raw: true };
    for await (const line of listItems(url, options)) {
      process.stdout.write(`${line}\n`);
      printed++;
    }
  } catch (e) {
    if (!(e instanceof ShardstreamError)) throw e;
    err(`error: ${e.message}`);
    code = e.exitCode;
  }
  const complete = code === 0 && pages.every((p) => p.complete);
  err(`pages: ${pages.length}`);
  err(`items: ${printed}`);
  err(`complete: ${complete}`);
  for (const p of pages) {
    for (const f of p.failed) {
      err(`failed shard ${f.shard}: ${f.error} (items_delivered=${f.items_delivered}, `
        + `page ${p.number}, request id ${p.requestId})`);
    }
  }
  if (code === 0 && !complete) code = 3;
  return code;
}

const invoked = process.argv[1] ? (() => {
  try {
    return pathToFileURL(realpathSync(process.argv[1])).href;
  } catch {
    return null;
  }
})() : null;

if (invoked === import.meta.url) {
  process.stdout.on('error', (e) => { // e.g. piped into head
    if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw e;
  });
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  }, (e) => {
    process.stderr.write(`${e.stack ?? e}\n`);
    process.exitCode = 1;
  });
}
