/**
 * Recovery at open: finds the head seq from the newest segment's tail alone (never the whole
 * journal), telling a torn write from damage.
 *
 * A torn write is what a crash in the middle of a write leaves: an incomplete last line (bytes
 * after the last newline), and only after an unclean stop. Anything else that does not check at
 * the end (a complete line that does not parse or fails its checksum, or an incomplete line
 * after a clean stop) is damage: cutting it would move the head back below seqs that were
 * acknowledged, and hand them to other events in the same epoch. So it is refused, unless the
 * caller allows cutting complete lines: after an OS restart in a mode that did not sync every
 * batch, the tail may hold blocks the OS never flushed, and the caller starts a new epoch.
 */
import * as FileSystem from "@effect/platform/FileSystem"
import { Effect } from "effect"
import { JournalCorrupt, JournalIoError } from "./Errors.js"
import { envelopeSeq } from "./Lines.js"

const NEWLINE = 0x0a

export interface TailRecovery {
  /** Seq of the last valid line, or `undefined` when the segment holds no valid line. */
  readonly lastSeq: number | undefined
  /** Length of the segment once what is cut is cut. */
  readonly validBytes: number
  /** The incomplete last line: a torn write. */
  readonly tornBytes: number
  /** Complete lines at the end that did not check, cut (only when `cutCompleteLines`). */
  readonly discardedBytes: number
}

export interface TailOptions {
  /** The previous process did not close the journal: an incomplete last line is a torn write. */
  readonly unclean: boolean
  /** Complete lines that do not check at the end may be cut (the caller starts a new epoch). */
  readonly cutCompleteLines: boolean
  /** More than this at the end without a valid line is not a torn write in any case. */
  readonly maxTornBytes: number
}

/**
 * Reads backwards from the end in growing windows, until the last valid line, which fixes the
 * head. Fails with `JournalCorrupt` (file and offset) on what it may not cut.
 */
export const recoverTail = (
  fs: FileSystem.FileSystem,
  path: string,
  options: TailOptions
): Effect.Effect<TailRecovery, JournalCorrupt | JournalIoError> =>
  Effect.scoped(
    Effect.gen(function* () {
      const io = (operation: string) => (cause: unknown) => new JournalIoError({ operation, path, cause })
      const corrupt = (offset: number, reason: string) =>
        new JournalCorrupt({ file: path, offset, reason, atOpen: true })
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
        const lastNewline = buffer.lastIndexOf(NEWLINE, filled - 1)
        if (lastNewline < 0 && from > 0) {
          if (size - from > options.maxTornBytes) {
            return yield* corrupt(from, `the last ${size - from} bytes hold no line break; this is not a torn write`)
          }
          window = Math.min(size, window * 4)
          continue
        }
        const incomplete = from + lastNewline + 1
        const tornBytes = size - incomplete
        if (tornBytes > 0 && !options.unclean) {
          return yield* corrupt(
            incomplete,
            "the last line has no line break, after a clean stop: this is damage, not a torn write"
          )
        }
        // Walk complete lines from the end; `end` is the offset just past a line's newline.
        let end = lastNewline + 1
        while (end > 0) {
          const lineEnd = end - 1
          const prev = lineEnd === 0 ? -1 : buffer.lastIndexOf(NEWLINE, lineEnd - 1)
          if (prev < 0 && from > 0) break // the line may begin before the window: widen it
          const lineStart = from + prev + 1
          const checked = envelopeSeq(buffer.subarray(prev + 1, lineEnd))
          if (typeof checked === "number") {
            const validBytes = from + end
            return { lastSeq: checked, validBytes, tornBytes, discardedBytes: incomplete - validBytes }
          }
          if (!options.cutCompleteLines) {
            return yield* corrupt(lineStart, `${checked}; a complete line at the end is damage, not a torn write`)
          }
          if (size - lineStart > options.maxTornBytes) {
            return yield* corrupt(
              lineStart,
              `more than ${options.maxTornBytes} bytes at the end do not parse; this is not a torn write`
            )
          }
          end = prev + 1
        }
        if (from === 0) return { lastSeq: undefined, validBytes: 0, tornBytes, discardedBytes: incomplete }
        window = Math.min(size, window * 4)
      }
    })
  )
