/**
 * A producer of realistic agent sessions, for `npm run demo`: sessions are created, users
 * and assistants exchange messages, tokens and tool progress stream by (ephemeral, filtered
 * out by the feed), task lists advance, sub-agents run, and runs complete. Durable and
 * ephemeral events are mixed the way a real platform mixes them.
 */
import { Effect, Random } from "effect"
import { ChangeFeed } from "./ChangeFeed.js"
import { feedPath } from "./Api/Routes.js"
import type { AgentEvent } from "./Domain/AgentEvent.js"

const topics = [
  "refactor the billing module",
  "summarise the incident report",
  "plan the Q3 roadmap",
  "fix the flaky test"
]

/** One session's life, paced by `stepMs` between events. */
const session = (id: number, stepMs: number) =>
  Effect.gen(function* () {
    const feed = yield* ChangeFeed
    const sid = `demo-${id}`
    const emit = (event: AgentEvent, sessionId: string | undefined = sid) =>
      Effect.zipRight(feed.record(sessionId, event), Effect.sleep(stepMs))
    const topic = topics[yield* Random.nextIntBetween(0, topics.length)]!
    yield* emit({ type: "session_created", session_id: sid, title: topic })
    yield* emit({ type: "message_appended", session_id: sid, message_id: `${sid}-m1`, role: "user", content: topic })
    yield* emit({ type: "execution_started", session_id: sid, execution_id: `${sid}-run` })
    for (const word of `Sure, let me ${topic}.`.split(" ")) yield* emit({ type: "token", content: word + " " })
    yield* emit({
      type: "task_list_updated",
      task_list: {
        session_id: sid,
        items: [
          { id: "t1", title: "read the code", status: "in_progress" },
          { id: "t2", title: "make the change", status: "pending" }
        ]
      }
    })
    yield* emit({ type: "tool_start", tool_call_id: `${sid}-c1`, tool_name: "read_file" })
    yield* emit({ type: "tool_complete", tool_call_id: `${sid}-c1`, tool_name: "read_file" })
    yield* emit({ type: "task_list_item_progress", session_id: sid, item_id: "t1", status: "done" })
    yield* emit({
      type: "sub_agent_started",
      parent_session_id: sid,
      child_session_id: `${sid}-sub`,
      agent_name: "reviewer"
    })
    yield* emit({ type: "sub_agent_heartbeat", parent_session_id: sid, child_session_id: `${sid}-sub` })
    yield* emit({ type: "sub_agent_completed", parent_session_id: sid, child_session_id: `${sid}-sub`, success: true })
    yield* emit({ type: "task_list_completed", session_id: sid, item_count: 2 })
    yield* emit({
      type: "message_appended",
      session_id: sid,
      message_id: `${sid}-m2`,
      role: "assistant",
      content: "Done."
    })
    // Terminal events carry no session id: the caller's id routes them.
    yield* emit({ type: "complete", usage: { prompt_tokens: 812, completion_tokens: 96, total_tokens: 908 } })
    yield* emit({ type: "session_title_updated", session_id: sid, title: `${topic} (done)` })
  })

/** Runs sessions forever, a few at a time, into the feed served at `url`. */
export const produce = (
  url: string,
  options: { readonly concurrentSessions?: number; readonly stepMs?: number } = {}
) =>
  Effect.gen(function* () {
    let next = 1
    const worker = Effect.forever(Effect.suspend(() => session(next++, options.stepMs ?? 400)))
    yield* Effect.logInfo(`demo: producing agent sessions; watch them with: curl -N ${url}${feedPath("stream")}`)
    yield* Effect.all(
      Array.from({ length: options.concurrentSessions ?? 3 }, () => worker),
      { concurrency: "unbounded" }
    )
  })
