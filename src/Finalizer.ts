/**
 * Finalizers on the scope in context that run as they are. `Effect.addFinalizer` and
 * `Effect.acquireRelease` run a release with the fiber state of the moment it was added, which
 * costs two walks over every fiber-local (a diff and a patch, there and back) each time one runs:
 * on paths taken per request or per reader, for releases that read none of that state (a
 * counter, a set, an interrupt), that work is needless.
 */
import { Effect, Scope } from "effect"

/** Runs `release` when the scope in context closes. */
export const onClose = (release: Effect.Effect<void>): Effect.Effect<void, never, Scope.Scope> =>
  Effect.flatMap(Effect.scope, (scope) => Scope.addFinalizer(scope, release))

/**
 * `acquire` now and its `release` when the scope in context closes, as one step that cannot be
 * interrupted in between.
 */
export const acquireSync = <A>(
  acquire: () => A,
  release: (a: A) => Effect.Effect<void>
): Effect.Effect<A, never, Scope.Scope> =>
  Effect.uninterruptible(
    Effect.flatMap(Effect.scope, (scope) => {
      const a = acquire()
      return Effect.as(Scope.addFinalizer(scope, release(a)), a)
    })
  )
