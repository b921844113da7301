/**
 * Recovery at open: finds the head seq from the newest segment's tail alone (never the
 * whole journal) and cuts a torn tail, the partial or garbled last lines a crash mid-write
 * leaves behind.
 */
import { FileSystem } from "@effect/platform"
import { Effect } from "effect"
import { JournalCorrupt, JournalIoError } from "./Errors.js"
import { envelopeSeq } from "./Lines.js"

const NEWLINE = 0x0a
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true })

export interface TailRecovery {
  /** Seq of the last valid line, or `undefined` when the segment holds no valid line. */
  readonly lastSeq: number | undefined
  /** Length of the segment once the torn tail is cut. */
  readonly validBytes: number
  /** Bytes cut off the end. */
  readonly tornBytes: number
}

/**
 * Reads backwards from the end in growing windows. Trailing bytes after the last newline
 * are torn; so are complete lines at the very end that do not parse (a crash can leave
 * zeros or half a batch). The first valid line from the end fixes the head. A window that
 * holds `maxTornBytes` of garbage without one valid line is corruption, not a torn tail.
 */
export const recoverTail = (
  fs: FileSystem.FileSystem,
  path: string,
  maxTornBytes: number
): Effect.Effect<TailRecovery, JournalCorrupt | JournalIoError> =>
  Effect.scoped(
    Effect.gen(function* () {
      const io = (operation: string) => (cause: unknown) => new JournalIoError({ operation, path, cause })
      const file = yield* fs.open(path, { flag: "r" }).pipe(Effect.mapError(io("open")))
      const size = Number((yield* file.stat.pipe(Effect.mapError(io("stat")))).size)
      let window = Math.min(size, 64 * 1024)
      while (true) {
        const from = size - window
        yield* file.seek(from, "start")
        const buffer = new Uint8Array(window)
        let filled = 0
        while (filled < window) {
          const n = Number(yield* file.read(buffer.subarray(filled)).pipe(Effect.mapError(io("read"))))
          if (n === 0) break
          filled += n
        }
        // Walk complete lines from the end; `end` is the offset just past a line's newline.
        let end = buffer.lastIndexOf(NEWLINE, filled - 1) + 1
        while (end > 0) {
          const lineEnd = end - 1
          const prev = lineEnd === 0 ? -1 : buffer.lastIndexOf(NEWLINE, lineEnd - 1)
          if (prev < 0 && from > 0) break // the line may begin before the window: widen it
          const decoded = decodeAt(buffer.subarray(prev + 1, lineEnd))
          if (decoded !== undefined) {
            const validBytes = from + end
            return { lastSeq: decoded, validBytes, tornBytes: size - validBytes }
          }
          if (size - (from + prev + 1) > maxTornBytes) {
            return yield* new JournalCorrupt({
              file: path,
              offset: from + prev + 1,
              reason: `more than ${maxTornBytes} bytes at the end do not parse; this is not a torn write`
            })
          }
          end = prev + 1
        }
        if (from === 0) return { lastSeq: undefined, validBytes: 0, tornBytes: size }
        if (size - from > maxTornBytes && end === 0 && buffer.lastIndexOf(NEWLINE, filled - 1) < 0) {
          return yield* new JournalCorrupt({
            file: path,
            offset: from,
            reason: `the last ${size - from} bytes hold no line break; this is not a torn write`
          })
        }
        window = Math.min(size, window * 4)
      }
    })
  )

const decodeAt = (bytes: Uint8Array): number | undefined => {
  let text: string
  try {
    text = utf8.decode(bytes)
  } catch {
    return undefined
  }
  return envelopeSeq(text)
}
