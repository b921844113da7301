/**
 * Line indexes of sealed segments: where each line of a segment ends and where its body ends,
 * kept once a read of lines or runs has gone through the whole segment and every line checked
 * out (in place, checksum holding, no control byte). A later read of runs (what an unfiltered SSE
 * replay pulls) takes the segment's lines from its index instead of scanning and checksumming
 * its bytes again: a sealed segment never changes, and those two were a third of a replay's work
 * on the main thread. Any read from a cursor inside the segment starts at the cursor's line,
 * which the index locates, rather than going through the lines before it.
 *
 * What stands for "never changes": the file's identity and state as `fstat` gives them (device,
 * inode, size, and the change and modification times to the nanosecond), taken when the index is
 * built and compared at every open. Any write to the file, a truncation, a `utimes` back to the
 * old time, or another file under the same name moves one of them. Only a segment last written
 * well before it is indexed is (`settledAfter`): file times come from a clock that ticks every
 * few milliseconds, or every second or two on file systems that keep whole seconds, and a write
 * within the same tick as the last append would keep them.
 *
 * The indexes of a process share one budget in bytes (`SegmentIndexes.shared`, 32 MiB by default:
 * 4 bytes a line, ~3.5 GiB of journal at ~450 bytes a line); the least recently used go first.
 */
import * as Fs from "node:fs"

/**
 * The lines of one sealed segment, read whole and checked: line `k` has seq `first + k`, starts
 * where line `k - 1` ended (its newline) plus one, and is `lengths[k]` bytes long without its
 * newline; its body ends `tails[k]` bytes before its end (what follows the body: the key, the
 * checksum, the closing brace). 16 bits each where every line fits them (4 bytes a line), else 32.
 */
export interface SegmentIndex {
  readonly first: number
  readonly count: number
  readonly lengths: Uint16Array | Uint32Array
  readonly tails: Uint16Array | Uint32Array
}

/**
 * How long before it is indexed a segment must have been last written, by the file times the
 * file system keeps: 50 ms where they have fractions of a second (the kernel's file clock ticks
 * every 1-10 ms), 2 s where they are whole seconds (FAT keeps even seconds).
 */
export const settledAfter = (written: bigint): number => (written % 1_000_000_000n === 0n ? 2_000 : 50)

/** What an open segment file is, as `fstat` tells: an index is used only for the same stamp. */
export type FileStamp = string

/**
 * The stamp of an open file, and whether it was last written long enough ago to be indexed;
 * `undefined` when `fstat` fails (the read then goes on without an index).
 */
export const stampOf = (
  fd: number,
  now: number,
  settledMs?: number
): { readonly stamp: FileStamp; readonly settled: boolean } | undefined => {
  let stats: Fs.BigIntStats
  try {
    stats = Fs.fstatSync(fd, { bigint: true })
  } catch {
    return undefined
  }
  const written = stats.mtimeNs > stats.ctimeNs ? stats.mtimeNs : stats.ctimeNs
  return {
    stamp: `${stats.dev}:${stats.ino}:${stats.size}:${stats.mtimeNs}:${stats.ctimeNs}`,
    settled: BigInt(now) * 1_000_000n - written > BigInt(settledMs ?? settledAfter(written)) * 1_000_000n
  }
}

const bytesOf = (index: SegmentIndex): number => index.lengths.byteLength + index.tails.byteLength

interface Entry {
  readonly stamp: FileStamp
  readonly index: SegmentIndex
}

/** The budget of the process's indexes unless the service is told otherwise (`FEED_SEGMENT_INDEX_BYTES`). */
export const DEFAULT_SEGMENT_INDEX_BYTES = 32 * 1024 * 1024

/** Indexes of sealed segments by file path, within a budget in bytes, least recently used out first. */
export class SegmentIndexes {
  /** One for the whole process: every journal opened without one of its own shares it. */
  static readonly shared = new SegmentIndexes(DEFAULT_SEGMENT_INDEX_BYTES)

  // A `Map` iterates in insertion order: an entry used is inserted again, so the first is the least recently used.
  private readonly entries = new Map<string, Entry>()
  private held = 0
  /** Reads that found their segment's index, and those that found none or a stale one. */
  hits = 0
  misses = 0

  constructor(
    private budget: number,
    /** How long before it is indexed a segment must have been last written (by default, `settledAfter`). */
    readonly settledMs?: number
  ) {}

  /** Bytes the indexes hold. */
  get bytes(): number {
    return this.held
  }

  /** The budget in bytes (0: nothing is kept). */
  get maxBytes(): number {
    return this.budget
  }

  /** Sets the budget (the service's `FEED_SEGMENT_INDEX_BYTES`), dropping the least recently used down to it. */
  resize(maxBytes: number): void {
    this.budget = maxBytes
    this.makeRoom(0)
  }

  /** Drops the least recently used until `size` more bytes fit the budget. */
  private makeRoom(size: number): void {
    for (const [key, entry] of this.entries) {
      if (this.held + size <= this.budget) break
      this.entries.delete(key)
      this.held -= bytesOf(entry.index)
    }
  }

  get size(): number {
    return this.entries.size
  }

  /** The index of `file` if it was built for the same stamp; a stale one is dropped. */
  get(file: string, stamp: FileStamp): SegmentIndex | undefined {
    const entry = this.entries.get(file)
    if (entry === undefined || entry.stamp !== stamp) {
      if (entry !== undefined) this.delete(file)
      this.misses++
      return undefined
    }
    this.entries.delete(file)
    this.entries.set(file, entry)
    this.hits++
    return entry.index
  }

  /** Keeps `index` for `file` as it is at `stamp`, making room by dropping the least recently used. */
  put(file: string, stamp: FileStamp, index: SegmentIndex): void {
    const size = bytesOf(index)
    this.delete(file)
    if (size > this.budget) return
    this.makeRoom(size)
    this.entries.set(file, { stamp, index })
    this.held += size
  }

  delete(file: string): void {
    const entry = this.entries.get(file)
    if (entry === undefined) return
    this.entries.delete(file)
    this.held -= bytesOf(entry.index)
  }

  /** Drops the indexes of every file in `directory` (a journal that closes). */
  deleteUnder(directory: string): void {
    const prefix = directory.endsWith("/") ? directory : `${directory}/`
    for (const key of [...this.entries.keys()]) if (key.startsWith(prefix)) this.delete(key)
  }
}

/** Lines a block of an index in the making holds (two blocks of 32 KiB). */
const BLOCK = 8192
/** Blocks let go by builders, for the next ones: a segment's build makes no garbage but its index. */
const freeBlocks: Array<Uint32Array> = []
const FREE_BLOCKS_KEPT = 64

const takeBlock = (): Uint32Array => freeBlocks.pop() ?? new Uint32Array(BLOCK)

/**
 * An index in the making, as a read goes through a segment from its first line: the lines it
 * checked, in order, in blocks taken from a pool and given back once the index is made. Spoiled
 * by any line it did not check as a line read in place, which then leaves the segment unindexed.
 */
export class IndexBuilder {
  private lengths: Array<Uint32Array> = []
  private tails: Array<Uint32Array> = []
  private count = 0
  private first = 0
  /** Where the next line starts in the file. */
  private next = 0
  private spoiled = false
  private longest = 0

  /** A line the read did not check as a line read in place: the segment stays unindexed. */
  spoil(): void {
    this.spoiled = true
    this.release()
  }

  /** Line `seq`, checked, ends at `end` in the file and its body at `bodyEnd` (it starts where the last one added ended). */
  add(seq: number, end: number, bodyEnd: number): void {
    if (this.spoiled) return
    const start = this.next
    if (this.count === 0) this.first = seq
    // Lines must follow one another, seqs and bytes alike.
    if (seq !== this.first + this.count || end < bodyEnd || bodyEnd < start) {
      this.spoil()
      return
    }
    const at = this.count % BLOCK
    if (at === 0) {
      this.lengths.push(takeBlock())
      this.tails.push(takeBlock())
    }
    const length = end - start
    const tail = end - bodyEnd
    this.lengths[this.lengths.length - 1]![at] = length
    this.tails[this.tails.length - 1]![at] = tail
    if (length > this.longest) this.longest = length
    if (tail > this.longest) this.longest = tail
    this.next = end + 1
    this.count++
  }

  /** The index, once the read reached the segment's end with every line checked (none if it holds no line). */
  finish(): SegmentIndex | undefined {
    if (this.spoiled || this.count === 0) return undefined
    const wide = this.longest > 0xffff
    const lengths = wide ? new Uint32Array(this.count) : new Uint16Array(this.count)
    const tails = wide ? new Uint32Array(this.count) : new Uint16Array(this.count)
    for (let b = 0; b < this.lengths.length; b++) {
      const n = Math.min(BLOCK, this.count - b * BLOCK)
      lengths.set(this.lengths[b]!.subarray(0, n), b * BLOCK)
      tails.set(this.tails[b]!.subarray(0, n), b * BLOCK)
    }
    const index = { first: this.first, count: this.count, lengths, tails }
    this.release()
    return index
  }

  private release(): void {
    for (const block of [...this.lengths, ...this.tails])
      if (freeBlocks.length < FREE_BLOCKS_KEPT) freeBlocks.push(block)
    this.lengths = []
    this.tails = []
  }
}
