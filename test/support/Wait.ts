/**
 * Waiting on the event instead of sleeping, so the tests hold on a slow, noisy machine, under
 * `TestClock` too: every wait here is bounded by wall-clock time, never by the Effect clock.
 */
import { Effect, Fiber } from "effect"

/** Lets the event loop run once (I/O callbacks included), whatever the clock. */
export const yieldToIo: Effect.Effect<void> = Effect.zipRight(
  Effect.yieldNow(),
  Effect.async<void>((resume) => {
    const handle = setImmediate(() => resume(Effect.void))
    return Effect.sync(() => clearImmediate(handle))
  })
)

/** A pause of real time, whatever the clock. */
const pause = (ms: number): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    const handle = setTimeout(() => resume(Effect.void), ms)
    return Effect.sync(() => clearTimeout(handle))
  })

/** Checks made back to back (one event-loop turn apart) before the checks are spaced out. */
const eagerChecks = 100

/**
 * Waits until `condition` holds, letting other fibers and I/O run between checks: at first one
 * event-loop turn apart, then a few milliseconds apart, so that a condition that is slow to come
 * (or costs a request to check) does not keep a busy machine busier. Fails the test, naming
 * `label`, if it does not hold within `timeoutMs` of wall-clock time.
 */
export const eventually = <E = never, R = never>(
  label: string,
  condition: Effect.Effect<boolean, E, R> | (() => boolean),
  timeoutMs = 30_000
): Effect.Effect<void, E, R> =>
  Effect.gen(function* () {
    const check = typeof condition === "function" ? Effect.sync(condition) : condition
    const deadline = Date.now() + timeoutMs
    let checks = 0
    while (!(yield* check)) {
      if (Date.now() > deadline) {
        return yield* Effect.dieMessage(`timed out after ${timeoutMs} ms waiting until ${label}`)
      }
      yield* ++checks < eagerChecks ? yieldToIo : pause(5)
    }
  })

/** Lets fibers and I/O run for `turns` event-loop turns: for asserting that something does *not* happen. */
export const settle = (turns = 50) => Effect.repeatN(yieldToIo, turns)

/** Joins a fiber, failing the test if it does not end within `timeoutMs` of wall-clock time. */
export const joinWithin = <A, E>(fiber: Fiber.RuntimeFiber<A, E>, label: string, timeoutMs = 30_000) =>
  Effect.zipRight(
    eventually(label, () => fiber.unsafePoll() !== null, timeoutMs),
    Fiber.join(fiber)
  )
