/**
 * The agent event catalog: every tag of DESIGN.md §3 decodes from its wire JSON and round-trips, the
 * durable/ephemeral split is exact, and session routing follows the one rule of §3.
 */
import { describe, it, assert } from "@effect/vitest"
import { Either, Schema } from "effect"
import {
  AgentDomain,
  AgentEvent,
  durableTypes,
  ephemeralTypes,
  isDurableChange,
  sessionIdOf
} from "../../src/Domain/AgentEvent.js"

const durableTags = [
  "message_appended",
  "session_history_committed",
  "session_created",
  "session_deleted",
  "session_cleared",
  "session_title_updated",
  "session_pinned_updated",
  "task_list_updated",
  "task_list_item_progress",
  "task_list_completed",
  "task_evaluation_completed",
  "task_evaluation_cancelled",
  "gold_evaluation_cancelled",
  "plan_mode_entered",
  "plan_mode_exited",
  "plan_file_updated",
  "sub_agent_started",
  "sub_agent_completed",
  "child_approval_changed",
  "need_clarification",
  "tool_approval_requested",
  "execution_started",
  "budget_exceeded",
  "complete",
  "cancelled",
  "error",
  "workflow_changed",
  "workflow_invalid",
  "workflow_recovered",
  "workflow_activated",
  "workflow_deactivated",
  "project_created",
  "project_updated",
  "project_archived",
  "session_project_updated",
  "config.changed",
  "config.invalid",
  "config.recovered"
]

const ephemeralTags = [
  "token",
  "reasoning_token",
  "tool_token",
  "tool_start",
  "tool_complete",
  "tool_error",
  "tool_lifecycle",
  "hook_lifecycle",
  "task_evaluation_started",
  "gold_evaluation_started",
  "gold_evaluation_completed",
  "goal_status_changed",
  "token_budget_updated",
  "context_compression_status",
  "context_summarized",
  "context_archived",
  "context_pressure_notification",
  "sub_agent_event",
  "sub_agent_heartbeat",
  "bash_completed",
  "runner_progress",
  "permission_posture_activated",
  "child_approval_requested",
  "notification"
]

/** One wire sample per tag, exercising optional fields where there are some. */
const samples: Record<string, Record<string, unknown>> = {
  message_appended: {
    type: "message_appended",
    session_id: "s1",
    message_id: "m1",
    role: "user",
    content: [{ type: "text", text: "Hi" }]
  },
  session_history_committed: { type: "session_history_committed", session_id: "s1", message_count: 12 },
  session_created: { type: "session_created", session_id: "s1", title: "New chat", project_id: "p1" },
  session_deleted: { type: "session_deleted", session_id: "s1" },
  session_cleared: { type: "session_cleared", session_id: "s1" },
  session_title_updated: { type: "session_title_updated", session_id: "s1", title: "Renamed" },
  session_pinned_updated: { type: "session_pinned_updated", session_id: "s1", pinned: true },
  task_list_updated: {
    type: "task_list_updated",
    task_list: {
      session_id: "s2",
      items: [
        { id: "t1", title: "Write tests", status: "in_progress", description: "all of them" },
        { id: "t2", title: "Ship", status: "pending" }
      ]
    }
  },
  task_list_item_progress: {
    type: "task_list_item_progress",
    session_id: "s1",
    item_id: "t1",
    status: "completed",
    note: "done"
  },
  task_list_completed: { type: "task_list_completed", session_id: "s1", item_count: 2 },
  task_evaluation_completed: {
    type: "task_evaluation_completed",
    session_id: "s1",
    task_id: "t1",
    passed: false,
    score: 0.25,
    summary: "missed a case"
  },
  task_evaluation_cancelled: { type: "task_evaluation_cancelled", session_id: "s1", task_id: "t1", reason: "user" },
  gold_evaluation_cancelled: { type: "gold_evaluation_cancelled", session_id: "s1", evaluation_id: "g1" },
  plan_mode_entered: { type: "plan_mode_entered", session_id: "s1" },
  plan_mode_exited: { type: "plan_mode_exited", session_id: "s1", approved: true },
  plan_file_updated: { type: "plan_file_updated", session_id: "s1", path: "PLAN.md", content: "# Plan" },
  sub_agent_started: {
    type: "sub_agent_started",
    parent_session_id: "parent",
    child_session_id: "child",
    agent_name: "researcher",
    task: "look things up"
  },
  sub_agent_completed: {
    type: "sub_agent_completed",
    parent_session_id: "parent",
    child_session_id: "child",
    success: true,
    summary: "found it"
  },
  child_approval_changed: {
    type: "child_approval_changed",
    parent_session_id: "parent",
    child_session_id: "child",
    request_id: "r1",
    status: "approved"
  },
  need_clarification: {
    type: "need_clarification",
    session_id: "s1",
    question: "Which one?",
    options: ["a", "b"]
  },
  tool_approval_requested: {
    type: "tool_approval_requested",
    session_id: "s1",
    request_id: "r1",
    tool_name: "bash",
    input: { command: "ls -la", cwd: null }
  },
  execution_started: { type: "execution_started", session_id: "s1", execution_id: "e1" },
  budget_exceeded: { type: "budget_exceeded", session_id: "s1", budget: "tokens", limit: 1000, used: 1200 },
  complete: { type: "complete", usage: { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 } },
  cancelled: { type: "cancelled" },
  error: { type: "error", message: "boom", code: "E_BOOM" },
  workflow_changed: { type: "workflow_changed", workflow_id: "w1", path: "workflows/w1.yaml" },
  workflow_invalid: { type: "workflow_invalid", workflow_id: "w1", message: "bad yaml" },
  workflow_recovered: { type: "workflow_recovered", workflow_id: "w1" },
  workflow_activated: { type: "workflow_activated", workflow_id: "w1" },
  workflow_deactivated: { type: "workflow_deactivated", workflow_id: "w1" },
  project_created: { type: "project_created", project_id: "p1", name: "Alpha" },
  project_updated: { type: "project_updated", project_id: "p1", name: "Beta", description: "renamed" },
  project_archived: { type: "project_archived", project_id: "p1" },
  session_project_updated: { type: "session_project_updated", session_id: "s1", project_id: "p1" },
  "config.changed": { type: "config.changed", path: "config.toml", keys: ["model", "theme"] },
  "config.invalid": { type: "config.invalid", path: "config.toml", message: "expected a table" },
  "config.recovered": { type: "config.recovered", path: "config.toml" },

  token: { type: "token", content: "Hi" },
  reasoning_token: { type: "reasoning_token", content: "thinking" },
  tool_token: { type: "tool_token", content: '{"a":', tool_call_id: "c1" },
  tool_start: { type: "tool_start", tool_call_id: "c1", tool_name: "bash", input: { command: "ls" } },
  tool_complete: { type: "tool_complete", tool_call_id: "c1", tool_name: "bash", output: "file.txt\n" },
  tool_error: { type: "tool_error", tool_call_id: "c1", tool_name: "bash", message: "exit 1" },
  tool_lifecycle: { type: "tool_lifecycle", tool_call_id: "c1", tool_name: "bash", phase: "running" },
  hook_lifecycle: { type: "hook_lifecycle", hook_name: "pre_tool", phase: "started", data: { n: 1 } },
  task_evaluation_started: { type: "task_evaluation_started", session_id: "s1", task_id: "t1" },
  gold_evaluation_started: { type: "gold_evaluation_started", session_id: "s1", evaluation_id: "g1" },
  gold_evaluation_completed: {
    type: "gold_evaluation_completed",
    session_id: "s1",
    evaluation_id: "g1",
    passed: true,
    score: 1
  },
  goal_status_changed: { type: "goal_status_changed", session_id: "s1", status: "achieved", goal: "ship" },
  token_budget_updated: { type: "token_budget_updated", session_id: "s1", used: 500, limit: 1000 },
  context_compression_status: {
    type: "context_compression_status",
    session_id: "s1",
    status: "running",
    ratio: 0.5
  },
  context_summarized: {
    type: "context_summarized",
    session_id: "s1",
    summarized_messages: 40,
    tokens_before: 90000,
    tokens_after: 12000
  },
  context_archived: { type: "context_archived", session_id: "s1", archived_messages: 40, archive_id: "a1" },
  context_pressure_notification: {
    type: "context_pressure_notification",
    session_id: "s1",
    level: "high",
    used_tokens: 180000,
    max_tokens: 200000
  },
  sub_agent_event: {
    type: "sub_agent_event",
    parent_session_id: "parent",
    child_session_id: "child",
    event: { type: "token", content: "nested" }
  },
  sub_agent_heartbeat: {
    type: "sub_agent_heartbeat",
    parent_session_id: "parent",
    child_session_id: "child",
    elapsed_ms: 1500
  },
  bash_completed: { type: "bash_completed", session_id: "s1", command: "ls", exit_code: 0 },
  runner_progress: { type: "runner_progress", session_id: "s1", message: "step 2/3", progress: 0.66 },
  permission_posture_activated: { type: "permission_posture_activated", session_id: "s1", posture: "auto_edit" },
  child_approval_requested: {
    type: "child_approval_requested",
    parent_session_id: "parent",
    child_session_id: "child",
    request_id: "r2",
    tool_name: "write_file",
    input: { path: "a.txt" }
  },
  notification: { type: "notification", message: "Saved", level: "info", title: "Config" }
}

const decode = Schema.decodeUnknownSync(AgentEvent)
const encode = Schema.encodeSync(AgentEvent)
const decodeEither = Schema.decodeUnknownEither(AgentEvent)

/** Goes through JSON text, as the journal and the SSE stream do. */
const fromWire = (sample: Record<string, unknown>): AgentEvent => decode(JSON.parse(JSON.stringify(sample)))

describe("AgentEvent catalog", () => {
  it("lists 38 durable and 24 ephemeral tags, disjoint, together covering every union member", () => {
    assert.strictEqual(durableTypes.size, 38)
    assert.strictEqual(ephemeralTypes.size, 24)
    assert.deepStrictEqual([...durableTypes].sort(), [...durableTags].sort())
    assert.deepStrictEqual([...ephemeralTypes].sort(), [...ephemeralTags].sort())
    for (const tag of durableTypes) assert.isFalse(ephemeralTypes.has(tag), `${tag} is both durable and ephemeral`)
    const memberTags = AgentEvent.members.map((member) => member.fields.type.literals[0]).sort()
    assert.strictEqual(memberTags.length, 62)
    assert.deepStrictEqual(memberTags, [...durableTypes, ...ephemeralTypes].sort())
    assert.deepStrictEqual(Object.keys(samples).sort(), memberTags)
  })

  it("decodes every tag from its wire JSON and round-trips encode(decode(x)) to x", () => {
    for (const [tag, sample] of Object.entries(samples)) {
      const event = fromWire(sample)
      assert.strictEqual(event.type, tag)
      assert.deepStrictEqual(encode(event), sample, `round-trip of ${tag}`)
      assert.deepStrictEqual(JSON.parse(JSON.stringify(encode(event))), sample, `JSON round-trip of ${tag}`)
    }
  })

  it("decodes minimal payloads where every optional field is absent, without inventing keys", () => {
    const minimal: ReadonlyArray<Record<string, unknown>> = [
      { type: "cancelled" },
      { type: "complete", usage: {} },
      { type: "session_project_updated", session_id: "s1" },
      { type: "tool_start", tool_call_id: "c1", tool_name: "bash" },
      { type: "plan_mode_exited", session_id: "s1" }
    ]
    for (const sample of minimal) assert.deepStrictEqual(encode(fromWire(sample)), sample)
  })

  it("decodes wire tags with dots", () => {
    const event = decode(JSON.parse(`{"type":"config.changed","path":"config.toml"}`))
    assert.strictEqual(event.type, "config.changed")
    assert.isTrue(isDurableChange(event))
    assert.strictEqual(decode({ type: "config.invalid", path: "c", message: "m" }).type, "config.invalid")
    assert.strictEqual(decode({ type: "config.recovered", path: "c" }).type, "config.recovered")
  })

  it("rejects an unknown type with an error that names the type field", () => {
    const result = decodeEither(JSON.parse(`{"type":"nope"}`))
    assert.isTrue(Either.isLeft(result))
    if (Either.isLeft(result)) {
      assert.include(result.left.message, `["type"]`)
      assert.include(result.left.message, `actual "nope"`)
    }
    assert.throws(() => decode({ type: "nope" }), /\["type"\]/)
  })

  it("rejects a known type with a missing required field", () => {
    assert.isTrue(Either.isLeft(decodeEither({ type: "session_deleted" })))
    assert.isTrue(Either.isLeft(decodeEither({ type: "error" })))
    assert.isTrue(Either.isLeft(decodeEither({ type: "task_list_updated", session_id: "s1" })))
  })

  it("rejects a snake_case spelling of a dotted tag", () => {
    assert.isTrue(Either.isLeft(decodeEither({ type: "config_changed", path: "c" })))
  })
})

describe("isDurableChange", () => {
  it("is true exactly for the durable list", () => {
    for (const [tag, sample] of Object.entries(samples)) {
      assert.strictEqual(isDurableChange(fromWire(sample)), durableTags.includes(tag), tag)
    }
  })

  it("is the domain's isDurable", () => {
    assert.strictEqual(AgentDomain.isDurable, isDurableChange)
    assert.strictEqual(AgentDomain.sessionId, sessionIdOf)
    assert.strictEqual(AgentDomain.schema, AgentEvent)
  })
})

describe("sessionIdOf (routing rule of §3)", () => {
  const route = (tag: string) => sessionIdOf(fromWire(samples[tag]!))

  it("takes session_id for session events", () => {
    assert.strictEqual(sessionIdOf(decode({ type: "session_deleted", session_id: "s9" })), "s9")
    assert.strictEqual(route("message_appended"), "s1")
    assert.strictEqual(route("session_project_updated"), "s1")
    assert.strictEqual(route("runner_progress"), "s1")
  })

  it("takes task_list.session_id for task_list_updated", () => {
    assert.strictEqual(route("task_list_updated"), "s2")
  })

  it("takes parent_session_id for sub-agent and child-approval events", () => {
    for (const tag of [
      "sub_agent_started",
      "sub_agent_completed",
      "sub_agent_event",
      "sub_agent_heartbeat",
      "child_approval_changed",
      "child_approval_requested"
    ]) {
      assert.strictEqual(route(tag), "parent", tag)
    }
  })

  it("gives none for terminal, tool, workflow, project and config events", () => {
    for (const tag of [
      "token",
      "reasoning_token",
      "tool_token",
      "tool_start",
      "complete",
      "cancelled",
      "error",
      "workflow_changed",
      "project_created",
      "config.changed",
      "config.invalid",
      "notification"
    ]) {
      assert.isUndefined(route(tag), tag)
    }
  })

  it("routes every sample: events with a top-level session_id use it, all others have a defined rule", () => {
    for (const [tag, sample] of Object.entries(samples)) {
      const expected =
        typeof sample.session_id === "string"
          ? sample.session_id
          : typeof sample.parent_session_id === "string"
            ? sample.parent_session_id
            : tag === "task_list_updated"
              ? "s2"
              : undefined
      assert.strictEqual(route(tag), expected, tag)
    }
  })
})
