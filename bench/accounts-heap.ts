/**
 * A preload for the service in section `accounts` (`node --expose-gc --import <this>`): on
 * SIGUSR2 it runs a full GC and writes one line, `accounts-heap <process.memoryUsage() JSON>`,
 * to stderr. It tells the heap still live from what V8 and the allocator keep after a burst of
 * work; the figures read this way say that they forced a GC. The service's own code is unchanged.
 */
const gc = (globalThis as { gc?: () => void }).gc

process.on("SIGUSR2", () => {
  gc?.()
  process.stderr.write(`accounts-heap ${JSON.stringify({ ...process.memoryUsage(), collected: gc !== undefined })}\n`)
})
