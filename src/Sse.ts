/**
 * Reading a Server-Sent Events stream: the one parser of the `text/event-stream` wire, used by
 * the typed client, the tests and the crash harness. It reports comments too (`: keepalive`),
 * which the tests look for; `@effect/experimental`'s parser does not.
 */
export interface SseFrame {
  readonly id: string | undefined
  readonly event: string
  readonly data: string
}

/**
 * An incremental SSE parser (per the HTML standard's rules for `id`, `event`, `data` and
 * comments), fed text chunks as they arrive.
 */
export const makeSseParser = (onFrame: (frame: SseFrame) => void, onComment?: (text: string) => void) => {
  let buffer = ""
  let id: string | undefined
  let event = ""
  let data: Array<string> = []
  const line = (text: string) => {
    if (text === "") {
      if (data.length > 0) onFrame({ id, event: event === "" ? "message" : event, data: data.join("\n") })
      event = ""
      data = []
      return
    }
    if (text.startsWith(":")) {
      onComment?.(text.slice(1).trimStart())
      return
    }
    const colon = text.indexOf(":")
    const field = colon < 0 ? text : text.slice(0, colon)
    let value = colon < 0 ? "" : text.slice(colon + 1)
    if (value.startsWith(" ")) value = value.slice(1)
    if (field === "data") data.push(value)
    else if (field === "event") event = value
    else if (field === "id" && !value.includes("\0")) id = value
  }
  return (chunk: string) => {
    buffer += chunk
    let start = 0
    while (true) {
      const nl = buffer.indexOf("\n", start)
      if (nl < 0) break
      let end = nl
      if (end > start && buffer.charCodeAt(end - 1) === 13) end--
      line(buffer.slice(start, end))
      start = nl + 1
    }
    buffer = buffer.slice(start)
  }
}
