/**
 * The live viewer at `/`: one HTML page with a small script, served by the service itself (no
 * build step, nothing fetched from elsewhere), kept here as a string so that it ships with any
 * build of the service.
 *
 * It shows the feed's status (head, oldest, epoch, subscribers, degraded, ...), refreshed every
 * few seconds, and the live tail from the stream, newest first, filterable by session and event
 * type. `EventSource` reconnects by itself with the last id it received; if it gives up (an
 * answer that is not a stream), the page starts it again from that id. When the service needs a
 * token the page asks for it, keeps it for the tab (sessionStorage), and sends it as a bearer
 * header, or `?access_token=` on the stream. Every URL is relative, so the page also works
 * behind a proxy that serves the service under a prefix.
 */
import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import { Effect } from "effect"
import * as Crypto from "node:crypto"

export const path = "/"

/** The route, for the answers to paths and methods no route has. */
export const routes = [[path, "GET"]] as const

const style = `
:root { color-scheme: light; --ink: #1d2330; --muted: #687083; --line: #e3e6ec; --card: #ffffff; --bg: #f5f6f9;
  --accent: #3657d6; --ok: #1e8a4c; --warn: #a86400; --bad: #c4302b; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink); background: var(--bg); }
header { display: flex; align-items: center; gap: 12px; padding: 14px 24px; background: var(--card); border-bottom: 1px solid var(--line); }
header h1 { margin: 0; font-size: 18px; font-weight: 600; }
header .spacer { flex: 1; }
.pill { display: inline-flex; align-items: center; gap: 6px; padding: 3px 10px; border-radius: 999px; font-size: 12px; font-weight: 600; background: #eef0f5; color: var(--muted); }
.pill::before { content: ""; width: 8px; height: 8px; border-radius: 50%; background: currentColor; }
.pill[data-state="live"], .pill[data-state="ok"] { background: #e5f4eb; color: var(--ok); }
.pill[data-state="replaying"], .pill[data-state="connecting"], .pill[data-state="reconnecting"] { background: #fdf2e1; color: var(--warn); }
.pill[data-state="down"], .pill[data-state="degraded"] { background: #fbe7e6; color: var(--bad); }
main { padding: 20px 24px; max-width: 1400px; margin: 0 auto; }
form#token-form { display: flex; gap: 8px; align-items: center; padding: 12px 16px; margin-bottom: 16px; background: #fff8e6; border: 1px solid #f0d9a8; border-radius: 8px; }
form#token-form[hidden] { display: none; }
form#token-form input { flex: 0 1 320px; }
input, select, button { font: inherit; padding: 6px 10px; border: 1px solid #c9ceda; border-radius: 6px; background: #fff; color: var(--ink); }
button { background: var(--accent); border-color: var(--accent); color: #fff; cursor: pointer; }
button.secondary { background: #fff; color: var(--ink); border-color: #c9ceda; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(140px, 1fr)); gap: 12px; margin-bottom: 8px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; min-width: 0; }
.card .label { font-size: 11px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
.card .value { font-size: 20px; font-weight: 600; font-variant-numeric: tabular-nums; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
header .epoch { color: var(--muted); font-size: 12px; }
header .epoch span { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; color: var(--ink); }
.problem { color: var(--bad); min-height: 1.4em; margin: 4px 0 12px; }
.toolbar { display: flex; flex-wrap: wrap; gap: 10px; align-items: center; margin: 8px 0 10px; }
.toolbar .count { color: var(--muted); margin-left: auto; }
table { width: 100%; border-collapse: collapse; background: var(--card); border: 1px solid var(--line); border-radius: 8px; overflow: hidden; table-layout: fixed; }
th, td { text-align: left; padding: 7px 12px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-size: 11px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); background: #fafbfc; }
td { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12.5px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
col.seq { width: 80px; } col.time { width: 120px; } col.session { width: 180px; } col.type { width: 220px; }
td.seq { color: var(--muted); font-variant-numeric: tabular-nums; }
td .type { display: inline-block; padding: 1px 8px; border-radius: 4px; background: #eef1fb; color: #2c3f97; }
tr.note td { font-family: inherit; white-space: normal; }
tr.note.reset td { background: #fff8e6; color: #7a4b00; }
tr.note.error td { background: #fbe7e6; color: var(--bad); }
tr.empty td { color: var(--muted); font-family: inherit; text-align: center; padding: 24px; }
`

const script = `
"use strict"
const byId = (id) => document.getElementById(id)
const tokenKey = "change-feed-token"
const keptEvents = 2000
const shownRows = 500
const state = { token: sessionStorage.getItem(tokenKey) || "", lastId: null, source: null, retry: undefined,
  items: [], sessions: new Set(), types: new Set() }

const bearer = () => (state.token ? { authorization: "Bearer " + state.token } : {})
const setPill = (id, kind, text) => { const pill = byId(id); pill.dataset.state = kind; pill.textContent = text }
const formatBytes = (n) => n < 1024 ? n + " B" : n < 1048576 ? (n / 1024).toFixed(1) + " KiB" : (n / 1048576).toFixed(1) + " MiB"

function askForToken(message) {
  if (state.source) state.source.close()
  state.source = null
  clearTimeout(state.retry)
  setPill("connection", "down", "needs a token")
  byId("token-message").textContent = message
  byId("token-form").hidden = false
  byId("token").focus()
}

/** The status, shown; false when the service wants a token, undefined when it cannot be had. */
async function refreshStatus() {
  try {
    const response = await fetch("api/v1/status", { headers: bearer(), cache: "no-store" })
    if (response.status === 401) {
      askForToken(state.token ? "The token was refused: enter the feed's bearer token." : "This feed needs a bearer token.")
      return false
    }
    if (!response.ok) throw new Error("it answered " + response.status)
    const status = await response.json()
    for (const field of ["head_seq", "oldest_seq", "epoch", "subscribers", "queued", "segments", "fsync"]) {
      byId(field).textContent = String(status[field])
    }
    byId("bytes").textContent = formatBytes(status.bytes)
    setPill("health", status.degraded ? "degraded" : "ok", status.degraded ? "degraded" : "healthy")
    byId("problem").textContent = status.degraded && status.last_error ? "Journal appends fail: " + status.last_error : ""
    byId("token-form").hidden = true
    return status
  } catch (error) {
    byId("problem").textContent = "The status could not be read (" + error.message + "); retrying."
    return undefined
  }
}

function matches(item) {
  if (item.note) return true
  const session = byId("session").value.trim()
  const type = byId("type").value
  return (session === "" || (item.session_id || "").includes(session)) && (type === "" || item.event.type === type)
}

function rowOf(item) {
  const row = document.createElement("tr")
  const cell = (text, className) => {
    const td = document.createElement("td")
    if (className) td.className = className
    td.textContent = text
    td.title = text
    row.appendChild(td)
    return td
  }
  if (item.note) {
    row.className = "note " + item.note
    cell(item.text).colSpan = 5
    return row
  }
  row.dataset.seq = String(item.seq)
  row.dataset.session = item.session_id || ""
  row.dataset.type = item.event.type
  cell(String(item.seq), "seq")
  cell(item.ts.slice(11, 23))
  cell(item.session_id || "–")
  const type = cell("")
  const chip = document.createElement("span")
  chip.className = "type"
  chip.textContent = item.event.type
  type.appendChild(chip)
  const { type: _type, session_id: _session, ...rest } = item.event
  cell(JSON.stringify(rest))
  return row
}

function render() {
  const body = byId("rows")
  body.replaceChildren()
  let shown = 0
  for (let i = state.items.length - 1; i >= 0 && shown < shownRows; i--) {
    if (!matches(state.items[i])) continue
    body.appendChild(rowOf(state.items[i]))
    shown++
  }
  if (shown === 0) {
    const row = document.createElement("tr")
    row.className = "empty"
    const td = document.createElement("td")
    td.colSpan = 5
    td.textContent = state.items.length === 0 ? "Waiting for events…" : "No event matches the filters."
    row.appendChild(td)
    body.appendChild(row)
  }
  const events = state.items.filter((item) => !item.note).length
  byId("count").textContent = "showing " + body.querySelectorAll("tr[data-seq]").length + " of " + events + " events"
}

function remember(set, value, listId) {
  if (value === undefined || set.has(value)) return
  set.add(value)
  const list = byId(listId)
  const option = document.createElement("option")
  option.value = value
  option.textContent = value
  const after = [...list.children].find((o) => o.value !== "" && o.value > value)
  list.insertBefore(option, after || null)
}

function add(item) {
  state.items.push(item)
  if (state.items.length > keptEvents) state.items.splice(0, state.items.length - keptEvents)
  if (!item.note) {
    remember(state.sessions, item.session_id, "sessions")
    remember(state.types, item.event.type, "type")
  }
  render()
}

function connect(since) {
  if (state.source) state.source.close()
  const params = new URLSearchParams()
  if (since) params.set("since", since)
  if (state.token) params.set("access_token", state.token)
  const source = new EventSource("api/v1/stream?" + params)
  state.source = source
  setPill("connection", "connecting", "connecting")
  source.onopen = () => setPill("connection", "replaying", "catching up")
  source.addEventListener("caught_up", () => setPill("connection", "live", "live"))
  source.addEventListener("feed_error", (message) => {
    add({ note: "error", text: "The feed could not be read: " + JSON.parse(message.data).message })
  })
  source.onmessage = (message) => {
    if (message.lastEventId) state.lastId = message.lastEventId
    const data = JSON.parse(message.data)
    if (data.type === "feed_reset") {
      add({ note: "reset", text: "Feed reset (" + data.reason + "): cursor " + data.from_seq + " cannot be served " +
        "(oldest " + data.oldest_seq + ", head " + data.head_seq + "); continuing from the head." })
    } else if (typeof data.seq === "number") {
      add(data)
    }
  }
  source.onerror = () => {
    if (source.readyState !== EventSource.CLOSED) {
      // The browser reconnects by itself, with the last id it received.
      setPill("connection", "reconnecting", "reconnecting")
      return
    }
    // Given up (an answer that was not a stream): start again from the last id, once the status answers.
    setPill("connection", "down", "disconnected")
    clearTimeout(state.retry)
    state.retry = setTimeout(start, 2000)
  }
}

async function start() {
  clearTimeout(state.retry)
  const status = await refreshStatus()
  if (status === false) return
  if (status === undefined) {
    state.retry = setTimeout(start, 2000)
    return
  }
  // First time: the last 100 retained events, then live.
  connect(state.lastId || status.epoch + ":" + Math.max(status.oldest_seq - 1, status.head_seq - 100))
}

byId("token-form").addEventListener("submit", (submit) => {
  submit.preventDefault()
  state.token = byId("token").value.trim()
  sessionStorage.setItem(tokenKey, state.token)
  start()
})
byId("session").addEventListener("input", render)
byId("type").addEventListener("change", render)
byId("clear").addEventListener("click", () => { state.items = []; render() })
setInterval(() => { if (byId("token-form").hidden) refreshStatus() }, 3000)
render()
start()
`

const card = (id: string, label: string) =>
  `<div class="card"><div class="label">${label}</div><div class="value" id="${id}">–</div></div>`

const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>change feed viewer</title>
<link rel="icon" href="data:,">
<style>${style}</style>
</head>
<body>
<header>
  <h1>change feed</h1>
  <span class="pill" id="connection" data-state="connecting">connecting</span>
  <span class="spacer"></span>
  <span class="epoch">epoch <span id="epoch">–</span></span>
  <span class="pill" id="health">status</span>
</header>
<main>
  <form id="token-form" hidden>
    <span id="token-message">This feed needs a bearer token.</span>
    <input id="token" type="password" autocomplete="off" placeholder="bearer token" aria-label="bearer token">
    <button type="submit">Connect</button>
  </form>
  <section class="cards" aria-label="status">
    ${card("head_seq", "head")}
    ${card("oldest_seq", "oldest")}
    ${card("subscribers", "subscribers")}
    ${card("queued", "queued")}
    ${card("segments", "segments")}
    ${card("bytes", "journal")}
    ${card("fsync", "fsync")}
  </section>
  <div class="problem" id="problem" role="status"></div>
  <div class="toolbar">
    <input id="session" list="sessions" placeholder="session contains…" aria-label="filter by session">
    <datalist id="sessions"></datalist>
    <select id="type" aria-label="filter by event type"><option value="">all event types</option></select>
    <button type="button" class="secondary" id="clear">Clear</button>
    <span class="count" id="count"></span>
  </div>
  <table>
    <colgroup><col class="seq"><col class="time"><col class="session"><col class="type"><col></colgroup>
    <thead><tr><th>seq</th><th>time (UTC)</th><th>session</th><th>type</th><th>event</th></tr></thead>
    <tbody id="rows"></tbody>
  </table>
</main>
<script>${script}</script>
</body>
</html>`

const sha256 = (text: string) => `'sha256-${Crypto.createHash("sha256").update(text, "utf8").digest("base64")}'`

/** Only this page's own script and style run, and it talks to its own origin only. */
const contentSecurityPolicy = [
  "default-src 'none'",
  `script-src ${sha256(script)}`,
  `style-src ${sha256(style)}`,
  "connect-src 'self'",
  "img-src 'self' data:",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'"
].join("; ")

export const layer = HttpApiBuilder.Router.use((router) =>
  router.get(
    path,
    Effect.succeed(
      HttpServerResponse.text(html, {
        contentType: "text/html; charset=utf-8",
        headers: {
          "content-security-policy": contentSecurityPolicy,
          "x-content-type-options": "nosniff",
          "referrer-policy": "no-referrer",
          "cache-control": "no-cache"
        }
      })
    )
  )
)
