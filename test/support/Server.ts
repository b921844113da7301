/**
 * The real service on a loopback port, for end-to-end tests: the file journal in a temp
 * directory, the feed, the HTTP API and a Node server. A `TestServer` can be closed on its
 * own and started again on the same directory and port, which is how the tests simulate a
 * server restart. Also the tests' view of the wire: JSON requests and SSE streams read
 * incrementally through `node:http`, frames parsed by the service's own `makeSseParser`. What
 * the server logs is kept, for tests of what it says about its faults.
 */
import { FileSystem, HttpServer, Path } from "@effect/platform"
import { NodeContext } from "@effect/platform-node"
import { Cause, Context, Deferred, Effect, Exit, Layer, Logger, Queue, Scope } from "effect"
import * as Fs from "node:fs"
import * as NodeHttp from "node:http"
import * as ChangeFeeds from "../../src/ChangeFeeds.js"
import * as Http from "../../src/Http.js"
import { makeSseParser, type SseFrame } from "../../src/Sse.js"
import { tempDir } from "./TempDir.js"
import { feedPath } from "../../src/Api/Routes.js"

export interface TestServerOptions {
  readonly directory: string
  /** 0 (the default) picks a free port; a restart passes the port of the server it replaces. */
  readonly port?: number | undefined
  readonly feed?: Omit<ChangeFeeds.FileFeedsOptions, "directory"> | undefined
  readonly http?: Http.HttpOptions | undefined
  /** Extra routes served next to the API, e.g. `HttpApiBuilder.Router.use(...)` for a test page. */
  readonly routes?: Layer.Layer<never> | undefined
  /** Built before the rest and around it, as `Http.layerFromSettings` builds the tracer: e.g. a tracer. */
  readonly around?: Layer.Layer<never> | undefined
}

export interface TestServer {
  /** `http://127.0.0.1:<port>` */
  readonly url: string
  readonly port: number
  readonly directory: string
  /** Shuts this server down (streams end, the feed drains, the journal closes); idempotent. */
  readonly close: Effect.Effect<void>
  /** What the server has logged so far. */
  readonly logs: () => ReadonlyArray<LogEntry>
}

export interface LogEntry {
  readonly level: string
  readonly message: string
  /** The cause logged with the message, rendered (empty when there is none). */
  readonly cause: string
}

/** Starts the service. It is closed by `close` or, at the latest, with the caller's scope. */
export const start = (options: TestServerOptions): Effect.Effect<TestServer, unknown, Scope.Scope> =>
  Effect.gen(function* () {
    const scope = yield* Scope.make()
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
    const logs: Array<LogEntry> = []
    const keep = Logger.make(({ logLevel, message, cause }) => {
      logs.push({
        level: logLevel.label,
        message: (Array.isArray(message) ? message : [message]).map(String).join(" "),
        cause: Cause.isEmpty(cause) ? "" : Cause.pretty(cause)
      })
    })
    const layer = Http.layerServer({ ...options.http, host: "127.0.0.1", port: options.port ?? 0 }).pipe(
      Layer.provide(options.routes ?? Layer.empty),
      Layer.provideMerge(ChangeFeeds.layer({ ...options.feed, directory: options.directory })),
      Layer.provide(NodeContext.layer),
      Layer.provide(Logger.add(keep)),
      Layer.provide(options.around ?? Layer.empty)
    )
    const context = yield* Layer.buildWithScope(layer, scope).pipe(
      Effect.tapErrorCause(() => Scope.close(scope, Exit.void))
    )
    const address = Context.get(context, HttpServer.HttpServer).address
    if (address._tag !== "TcpAddress") return yield* Effect.dieMessage("the test server must listen on TCP")
    return {
      url: `http://127.0.0.1:${address.port}`,
      port: address.port,
      directory: options.directory,
      close: Scope.close(scope, Exit.void),
      logs: () => logs
    }
  })

/** A scoped temp directory for a journal: `tempDir`, by the name some tests know it by. */
export const tempDirectory = tempDir

// ---------------------------------------------------------------------------------------------------------------
// Requests
//
// Through `node:http` without connection pooling (`agent: false`, so `Connection: close`):
// what the tests see is exactly what the server sent on one connection, and no pooled client
// keeps (or reopens) idle connections that would hold up a server's close.
// ---------------------------------------------------------------------------------------------------------------

export interface RequestOptions {
  readonly method?: string
  readonly headers?: Record<string, string>
  readonly body?: string | Uint8Array
  /** Send the body with chunked transfer encoding, without a content-length. */
  readonly chunked?: boolean
  /** Send `Expect: 100-continue` and the body only once the server says `100 Continue`. */
  readonly expectContinue?: boolean
}

const send = (url: string, options: RequestOptions, signal?: AbortSignal) =>
  new Promise<NodeHttp.IncomingMessage>((resolve, reject) => {
    const request = NodeHttp.request(
      url,
      { method: options.method ?? "GET", headers: options.headers ?? {}, agent: false, ...(signal ? { signal } : {}) },
      resolve
    )
    request.on("error", reject)
    const sendBody = () => {
      if (options.body !== undefined && options.chunked === true) {
        request.write(options.body)
        request.end()
      } else {
        request.end(options.body)
      }
    }
    if (options.expectContinue === true) {
      request.setHeader("expect", "100-continue")
      request.flushHeaders()
      request.on("continue", sendBody)
    } else {
      sendBody()
    }
  })

export interface JsonResponse {
  readonly status: number
  readonly headers: NodeHttp.IncomingHttpHeaders
  /** Parsed when the response is JSON, else the text. */
  readonly body: any
}

/** One request, its whole response. */
export const request = (url: string, options: RequestOptions = {}): Effect.Effect<JsonResponse> =>
  Effect.promise(async () => {
    const response = await send(url, options)
    let text = ""
    response.setEncoding("utf8")
    for await (const chunk of response) text += chunk
    const json = (response.headers["content-type"] ?? "").includes("json")
    return { status: response.statusCode ?? 0, headers: response.headers, body: json ? JSON.parse(text) : text }
  })

export const post = (url: string, body: unknown, headers: Record<string, string> = {}) =>
  request(url, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body)
  })

export interface StatusBody {
  readonly head_seq: number
  readonly oldest_seq: number
  readonly epoch: string
  readonly segments: number
  readonly bytes: number
  readonly dropped: number
  readonly subscribers: number
  readonly degraded: boolean
  readonly last_error: string | null
  readonly queued: number
  readonly fsync: string
}

/** The feed's status (asserting the request succeeded). */
export const status = (server: TestServer, headers: Record<string, string> = {}): Effect.Effect<StatusBody> =>
  Effect.flatMap(request(`${server.url}${feedPath("status")}`, { headers }), (response) =>
    response.status === 200
      ? Effect.succeed(response.body as StatusBody)
      : Effect.dieMessage(`GET /api/v1/status answered ${response.status}: ${JSON.stringify(response.body)}`)
  )

export interface AppendEntry {
  readonly session_id?: string
  readonly event: Record<string, unknown>
}

/** Appends events, one request each, in order; answers their seqs (asserting each was journaled). */
export const append = (
  server: TestServer,
  entries: ReadonlyArray<AppendEntry>,
  headers: Record<string, string> = {}
): Effect.Effect<Array<number>> =>
  Effect.forEach(entries, (entry) =>
    Effect.flatMap(post(`${server.url}${feedPath("events")}`, entry, headers), (response) =>
      response.status === 200 && typeof response.body.seqs?.[0] === "number"
        ? Effect.succeed(response.body.seqs[0] as number)
        : Effect.dieMessage(`POST /api/v1/events answered ${response.status}: ${JSON.stringify(response.body)}`)
    )
  )

/** A durable event of session `session` (routed by its own `session_id`). */
export const created = (session: string, title = `title of ${session}`): AppendEntry => ({
  event: { type: "session_created", session_id: session, title }
})

/** `n` durable events of session `session`. */
export const createdMany = (n: number, session = "s1"): Array<AppendEntry> =>
  Array.from({ length: n }, (_, i) => created(session, `event ${i + 1}`))

// ---------------------------------------------------------------------------------------------------------------
// Damage on disk
// ---------------------------------------------------------------------------------------------------------------

/** How a stored line is damaged: the whole line overwritten with `#`, or its seq changed (the line still parses). */
export type Damage = "not_json" | "wrong_seq"

/** Another seq of as many digits: the last one changed. */
const otherSeq = (seq: number) => `${String(seq).slice(0, -1)}${(seq + 1) % 10}`

/**
 * Damages the journal line of event `seq` in place, keeping its length (so every other line
 * stays where it was), as bit rot or a stray write would. Answers the file and the offset of
 * the line, which is what the server must name.
 */
export const damageLine = (
  server: TestServer,
  seq: number,
  damage: Damage
): Effect.Effect<{ readonly file: string; readonly offset: number }> =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const names = (yield* fs.readDirectory(server.directory)).filter((n) => /^events-\d{20}\.jsonl$/.test(n)).sort()
    for (const name of names) {
      const file = path.join(server.directory, name)
      const bytes = Buffer.from(yield* fs.readFile(file))
      const offset = bytes.indexOf(`{"seq":${seq},`)
      if (offset < 0 || (offset > 0 && bytes[offset - 1] !== 0x0a)) continue
      const end = bytes.indexOf(0x0a, offset)
      const line = bytes.subarray(offset, end)
      const damaged =
        damage === "not_json"
          ? Buffer.alloc(line.length, "#")
          : Buffer.from(line.toString("latin1").replace(`{"seq":${seq},`, `{"seq":${otherSeq(seq)},`), "latin1")
      damaged.copy(bytes, offset)
      yield* fs.writeFile(file, bytes)
      return { file, offset }
    }
    return yield* Effect.dieMessage(`no journal line holds seq ${seq}`)
  }).pipe(Effect.orDie, Effect.provide(NodeContext.layer))

// ---------------------------------------------------------------------------------------------------------------
// SSE streams
// ---------------------------------------------------------------------------------------------------------------

export interface SseStream {
  readonly status: number
  readonly headers: NodeHttp.IncomingHttpHeaders
  /** Every frame, in order of arrival. */
  readonly frames: Queue.Dequeue<SseFrame>
  /** Every comment line (`: keepalive` arrives as `keepalive`). */
  readonly comments: Queue.Dequeue<string>
  /** The raw text received so far. */
  readonly text: () => string
  /** Completed when the body ends: `"end"` for a clean end, else what went wrong. */
  readonly ended: Deferred.Deferred<string>
  /** The next frame (waits for it). */
  readonly next: Effect.Effect<SseFrame>
  /** Frames up to and including the first one matching `until`. */
  readonly takeUntil: (until: (frame: SseFrame) => boolean) => Effect.Effect<Array<SseFrame>>
  /** Frames up to and including the next `caught_up`. */
  readonly untilCaughtUp: Effect.Effect<Array<SseFrame>>
}

/**
 * Opens a stream and reads it in the background until it ends or the scope closes (which
 * drops the connection). Answers once the response headers are in. Nothing here depends on
 * the Effect clock, so it works the same under `TestClock`.
 */
export const openStream = (
  url: string,
  headers: Record<string, string> = {}
): Effect.Effect<SseStream, never, Scope.Scope> =>
  Effect.gen(function* () {
    const abort = new AbortController()
    yield* Effect.addFinalizer(() => Effect.sync(() => abort.abort()))
    const response = yield* Effect.promise(() => send(url, { headers }, abort.signal))
    const frames = yield* Queue.unbounded<SseFrame>()
    const comments = yield* Queue.unbounded<string>()
    const ended = yield* Deferred.make<string>()
    let raw = ""
    const parse = makeSseParser(
      (frame) => Queue.unsafeOffer(frames, frame),
      (comment) => Queue.unsafeOffer(comments, comment)
    )
    const finish = (how: string) => Deferred.unsafeDone(ended, Exit.succeed(how))
    response.setEncoding("utf8")
    response.on("data", (text: string) => {
      raw += text
      parse(text)
    })
    response.on("end", () => finish("end"))
    response.on("error", (error) => finish(error.message))
    response.on("close", () => finish(response.complete ? "end" : "closed before the end of the body"))
    const next = Queue.take(frames)
    const takeUntil = (until: (frame: SseFrame) => boolean) =>
      Effect.gen(function* () {
        const taken: Array<SseFrame> = []
        while (true) {
          const frame = yield* next
          taken.push(frame)
          if (until(frame)) return taken
        }
      })
    return {
      status: response.statusCode ?? 0,
      headers: response.headers,
      frames,
      comments,
      text: () => raw,
      ended,
      next,
      takeUntil,
      untilCaughtUp: takeUntil((frame) => frame.event === "caught_up")
    }
  })

/** The data of a frame, parsed. */
export const dataOf = (frame: SseFrame): any => JSON.parse(frame.data)

/** The seqs of the change events among `frames` (resets, progress and caught-up frames left out). */
export const seqsOf = (frames: ReadonlyArray<SseFrame>): Array<number> =>
  frames.filter((f) => f.event === "message" && dataOf(f).seq !== undefined).map((f) => dataOf(f).seq as number)

/** An SSE request whose response is not read (until the test reads it): the socket's buffers fill and stay full. */
export const stalledStream = (url: string) =>
  Effect.acquireRelease(
    Effect.async<NodeHttp.IncomingMessage>((resume) => {
      const request = NodeHttp.get(url, { agent: false }, (response) => {
        response.pause()
        resume(Effect.succeed(response))
      })
      request.on("error", (error) => resume(Effect.die(error)))
    }),
    (response) => Effect.sync(() => response.destroy())
  )

/** The most the kernel can hold for one loopback connection (receive plus send buffer), from /proc when it says. */
export const socketBufferBytes = (): number => {
  const max = (file: string) => {
    try {
      return Number(Fs.readFileSync(file, "utf8").trim().split(/\s+/)[2])
    } catch {
      return 0
    }
  }
  const total = max("/proc/sys/net/ipv4/tcp_rmem") + max("/proc/sys/net/ipv4/tcp_wmem")
  return Number.isFinite(total) && total > 0 ? total : 16 * 1024 * 1024
}
