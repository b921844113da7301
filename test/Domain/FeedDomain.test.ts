/**
 * What a routing rule reads (`sessionPath`): for the agent catalog's rule, the path it gives for
 * each type is where every event of that type has the session the rule answers; and a rule that
 * does anything but return one field by the tag is never taken for a path.
 */
import { assert, describe, it } from "@effect/vitest"
import { Arbitrary } from "effect"
import { AgentEvent, durableTypes, ephemeralTypes, sessionIdOf } from "../../src/Domain/AgentEvent.js"
import { sessionPath } from "../../src/Domain/FeedDomain.js"

const at = (value: unknown, path: ReadonlyArray<string>): unknown =>
  path.reduce<unknown>(
    (v, key) => (typeof v === "object" && v !== null ? (v as Record<string, unknown>)[key] : undefined),
    value
  )

describe("sessionPath", () => {
  it.prop(
    "the_path_found_for_a_type_holds_the_session_the_rule_answers_for_its_events",
    [Arbitrary.make(AgentEvent)],
    ([event]) => {
      const path = sessionPath(sessionIdOf, "type", event.type)
      assert.notStrictEqual(path._tag, "Unknown", event.type)
      if (path._tag === "Field") assert.strictEqual(at(event, path.path), sessionIdOf(event))
      else assert.isUndefined(sessionIdOf(event))
    }
  )

  it("finds_each_of_the_catalogs_paths", () => {
    const paths = new Map(
      [...durableTypes, ...ephemeralTypes].map((type) => [type, sessionPath(sessionIdOf, "type", type)])
    )
    assert.deepStrictEqual(paths.get("session_deleted"), { _tag: "Field", path: ["session_id"] })
    assert.deepStrictEqual(paths.get("task_list_updated"), { _tag: "Field", path: ["task_list", "session_id"] })
    assert.deepStrictEqual(paths.get("sub_agent_started"), { _tag: "Field", path: ["parent_session_id"] })
    assert.deepStrictEqual(paths.get("complete"), { _tag: "None" })
  })

  it("takes_no_rule_for_a_path_that_does_more_than_return_one_field", () => {
    const unknown = { _tag: "Unknown" }
    assert.deepStrictEqual(
      sessionPath((e) => (e.flag ? e.session_id : undefined), "type", "t"),
      unknown
    )
    assert.deepStrictEqual(
      sessionPath((e) => `${e.session_id}`, "type", "t"),
      unknown
    )
    assert.deepStrictEqual(
      sessionPath((e) => e.a ?? e.b, "type", "t"),
      { _tag: "Field", path: ["a"] }
    )
    assert.deepStrictEqual(
      sessionPath((e) => (e.a, e.b), "type", "t"),
      unknown
    )
    assert.deepStrictEqual(
      sessionPath(
        () => {
          throw new Error("no")
        },
        "type",
        "t"
      ),
      unknown
    )
    assert.deepStrictEqual(
      sessionPath((e) => (e.type === "t" ? undefined : e.x), "type", "t"),
      { _tag: "None" }
    )
    assert.deepStrictEqual(
      sessionPath((e) => (e.type === "u" ? undefined : e.x.y), "type", "t"),
      {
        _tag: "Field",
        path: ["x", "y"]
      }
    )
  })
})
