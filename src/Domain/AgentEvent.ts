/**
 * `AgentEvent`: the agent platform's event catalog, the default domain plugged into the feed.
 *
 * Internally tagged on the wire by a snake_case `type` field (`{"type":"session_deleted","session_id":"s1"}`);
 * the config events use dotted tags (`config.changed`). Every payload is plain JSON, so the encoded form of an
 * event equals its decoded form. The catalog is split into durable events (journaled) and ephemeral ones
 * (filtered before any copy), and each event names its own session by the one routing rule of `sessionIdOf`.
 */
import { Either, ParseResult, Schema } from "effect"
import { absurd } from "effect/Function"
import { type CanonicalCheck, canonicalCheck } from "./Canonical.js"
import type { FeedDomain } from "./FeedDomain.js"

const optional = <S extends Schema.Schema.Any>(schema: S) => Schema.optionalWith(schema, { exact: true })

// ---------------------------------------------------------------------------------------------------------------
// Shared payload parts
// ---------------------------------------------------------------------------------------------------------------

/** One item of a session's task list. */
export const TaskListItem = Schema.Struct({
  id: Schema.String,
  title: Schema.String,
  status: Schema.String,
  description: optional(Schema.String)
})

/** A session's task list, as carried by `task_list_updated`. */
export const TaskList = Schema.Struct({
  session_id: Schema.String,
  items: Schema.Array(TaskListItem)
})

/** Token accounting of a completed turn. */
export const Usage = Schema.Struct({
  prompt_tokens: optional(Schema.Number),
  completion_tokens: optional(Schema.Number),
  total_tokens: optional(Schema.Number)
})

// ---------------------------------------------------------------------------------------------------------------
// Durable events (journaled)
// ---------------------------------------------------------------------------------------------------------------

export const MessageAppended = Schema.Struct({
  type: Schema.Literal("message_appended"),
  session_id: Schema.String,
  message_id: Schema.String,
  role: Schema.String,
  content: Schema.Unknown
})

export const SessionHistoryCommitted = Schema.Struct({
  type: Schema.Literal("session_history_committed"),
  session_id: Schema.String,
  message_count: Schema.Number
})

export const SessionCreated = Schema.Struct({
  type: Schema.Literal("session_created"),
  session_id: Schema.String,
  title: optional(Schema.String),
  project_id: optional(Schema.String)
})

export const SessionDeleted = Schema.Struct({
  type: Schema.Literal("session_deleted"),
  session_id: Schema.String
})

export const SessionCleared = Schema.Struct({
  type: Schema.Literal("session_cleared"),
  session_id: Schema.String
})

export const SessionTitleUpdated = Schema.Struct({
  type: Schema.Literal("session_title_updated"),
  session_id: Schema.String,
  title: Schema.String
})

export const SessionPinnedUpdated = Schema.Struct({
  type: Schema.Literal("session_pinned_updated"),
  session_id: Schema.String,
  pinned: Schema.Boolean
})

export const TaskListUpdated = Schema.Struct({
  type: Schema.Literal("task_list_updated"),
  task_list: TaskList
})

export const TaskListItemProgress = Schema.Struct({
  type: Schema.Literal("task_list_item_progress"),
  session_id: Schema.String,
  item_id: Schema.String,
  status: Schema.String,
  note: optional(Schema.String)
})

export const TaskListCompleted = Schema.Struct({
  type: Schema.Literal("task_list_completed"),
  session_id: Schema.String,
  item_count: optional(Schema.Number)
})

export const TaskEvaluationCompleted = Schema.Struct({
  type: Schema.Literal("task_evaluation_completed"),
  session_id: Schema.String,
  task_id: Schema.String,
  passed: Schema.Boolean,
  score: optional(Schema.Number),
  summary: optional(Schema.String)
})

export const TaskEvaluationCancelled = Schema.Struct({
  type: Schema.Literal("task_evaluation_cancelled"),
  session_id: Schema.String,
  task_id: Schema.String,
  reason: optional(Schema.String)
})

export const GoldEvaluationCancelled = Schema.Struct({
  type: Schema.Literal("gold_evaluation_cancelled"),
  session_id: Schema.String,
  evaluation_id: Schema.String,
  reason: optional(Schema.String)
})

export const PlanModeEntered = Schema.Struct({
  type: Schema.Literal("plan_mode_entered"),
  session_id: Schema.String
})

export const PlanModeExited = Schema.Struct({
  type: Schema.Literal("plan_mode_exited"),
  session_id: Schema.String,
  approved: optional(Schema.Boolean)
})

export const PlanFileUpdated = Schema.Struct({
  type: Schema.Literal("plan_file_updated"),
  session_id: Schema.String,
  path: Schema.String,
  content: optional(Schema.String)
})

export const SubAgentStarted = Schema.Struct({
  type: Schema.Literal("sub_agent_started"),
  parent_session_id: Schema.String,
  child_session_id: Schema.String,
  agent_name: Schema.String,
  task: optional(Schema.String)
})

export const SubAgentCompleted = Schema.Struct({
  type: Schema.Literal("sub_agent_completed"),
  parent_session_id: Schema.String,
  child_session_id: Schema.String,
  success: Schema.Boolean,
  summary: optional(Schema.String)
})

export const ChildApprovalChanged = Schema.Struct({
  type: Schema.Literal("child_approval_changed"),
  parent_session_id: Schema.String,
  child_session_id: Schema.String,
  request_id: Schema.String,
  status: Schema.String
})

export const NeedClarification = Schema.Struct({
  type: Schema.Literal("need_clarification"),
  session_id: Schema.String,
  question: Schema.String,
  options: optional(Schema.Array(Schema.String))
})

export const ToolApprovalRequested = Schema.Struct({
  type: Schema.Literal("tool_approval_requested"),
  session_id: Schema.String,
  request_id: Schema.String,
  tool_name: Schema.String,
  input: optional(Schema.Unknown)
})

export const ExecutionStarted = Schema.Struct({
  type: Schema.Literal("execution_started"),
  session_id: Schema.String,
  execution_id: Schema.String
})

export const BudgetExceeded = Schema.Struct({
  type: Schema.Literal("budget_exceeded"),
  session_id: Schema.String,
  budget: Schema.String,
  limit: Schema.Number,
  used: Schema.Number
})

export const Complete = Schema.Struct({
  type: Schema.Literal("complete"),
  usage: Usage
})

export const Cancelled = Schema.Struct({
  type: Schema.Literal("cancelled"),
  reason: optional(Schema.String)
})

export const AgentError = Schema.Struct({
  type: Schema.Literal("error"),
  message: Schema.String,
  code: optional(Schema.String)
})

export const WorkflowChanged = Schema.Struct({
  type: Schema.Literal("workflow_changed"),
  workflow_id: Schema.String,
  path: optional(Schema.String)
})

export const WorkflowInvalid = Schema.Struct({
  type: Schema.Literal("workflow_invalid"),
  workflow_id: Schema.String,
  message: Schema.String
})

export const WorkflowRecovered = Schema.Struct({
  type: Schema.Literal("workflow_recovered"),
  workflow_id: Schema.String
})

export const WorkflowActivated = Schema.Struct({
  type: Schema.Literal("workflow_activated"),
  workflow_id: Schema.String
})

export const WorkflowDeactivated = Schema.Struct({
  type: Schema.Literal("workflow_deactivated"),
  workflow_id: Schema.String
})

export const ProjectCreated = Schema.Struct({
  type: Schema.Literal("project_created"),
  project_id: Schema.String,
  name: Schema.String
})

export const ProjectUpdated = Schema.Struct({
  type: Schema.Literal("project_updated"),
  project_id: Schema.String,
  name: optional(Schema.String),
  description: optional(Schema.String)
})

export const ProjectArchived = Schema.Struct({
  type: Schema.Literal("project_archived"),
  project_id: Schema.String
})

/** `project_id` absent: the session was moved out of any project. */
export const SessionProjectUpdated = Schema.Struct({
  type: Schema.Literal("session_project_updated"),
  session_id: Schema.String,
  project_id: optional(Schema.String)
})

export const ConfigChanged = Schema.Struct({
  type: Schema.Literal("config.changed"),
  path: Schema.String,
  keys: optional(Schema.Array(Schema.String))
})

export const ConfigInvalid = Schema.Struct({
  type: Schema.Literal("config.invalid"),
  path: Schema.String,
  message: Schema.String
})

export const ConfigRecovered = Schema.Struct({
  type: Schema.Literal("config.recovered"),
  path: Schema.String
})

// ---------------------------------------------------------------------------------------------------------------
// Ephemeral events (never journaled)
// ---------------------------------------------------------------------------------------------------------------

export const Token = Schema.Struct({
  type: Schema.Literal("token"),
  content: Schema.String
})

export const ReasoningToken = Schema.Struct({
  type: Schema.Literal("reasoning_token"),
  content: Schema.String
})

export const ToolToken = Schema.Struct({
  type: Schema.Literal("tool_token"),
  content: Schema.String,
  tool_call_id: optional(Schema.String)
})

export const ToolStart = Schema.Struct({
  type: Schema.Literal("tool_start"),
  tool_call_id: Schema.String,
  tool_name: Schema.String,
  input: optional(Schema.Unknown)
})

export const ToolComplete = Schema.Struct({
  type: Schema.Literal("tool_complete"),
  tool_call_id: Schema.String,
  tool_name: Schema.String,
  output: optional(Schema.Unknown)
})

export const ToolError = Schema.Struct({
  type: Schema.Literal("tool_error"),
  tool_call_id: Schema.String,
  tool_name: Schema.String,
  message: Schema.String
})

export const ToolLifecycle = Schema.Struct({
  type: Schema.Literal("tool_lifecycle"),
  tool_call_id: Schema.String,
  tool_name: Schema.String,
  phase: Schema.String
})

export const HookLifecycle = Schema.Struct({
  type: Schema.Literal("hook_lifecycle"),
  hook_name: Schema.String,
  phase: Schema.String,
  data: optional(Schema.Unknown)
})

export const TaskEvaluationStarted = Schema.Struct({
  type: Schema.Literal("task_evaluation_started"),
  session_id: Schema.String,
  task_id: Schema.String
})

export const GoldEvaluationStarted = Schema.Struct({
  type: Schema.Literal("gold_evaluation_started"),
  session_id: Schema.String,
  evaluation_id: Schema.String
})

export const GoldEvaluationCompleted = Schema.Struct({
  type: Schema.Literal("gold_evaluation_completed"),
  session_id: Schema.String,
  evaluation_id: Schema.String,
  passed: Schema.Boolean,
  score: optional(Schema.Number)
})

export const GoalStatusChanged = Schema.Struct({
  type: Schema.Literal("goal_status_changed"),
  session_id: Schema.String,
  status: Schema.String,
  goal: optional(Schema.String)
})

export const TokenBudgetUpdated = Schema.Struct({
  type: Schema.Literal("token_budget_updated"),
  session_id: Schema.String,
  used: Schema.Number,
  limit: Schema.Number
})

export const ContextCompressionStatus = Schema.Struct({
  type: Schema.Literal("context_compression_status"),
  session_id: Schema.String,
  status: Schema.String,
  ratio: optional(Schema.Number)
})

export const ContextSummarized = Schema.Struct({
  type: Schema.Literal("context_summarized"),
  session_id: Schema.String,
  summarized_messages: Schema.Number,
  tokens_before: optional(Schema.Number),
  tokens_after: optional(Schema.Number)
})

export const ContextArchived = Schema.Struct({
  type: Schema.Literal("context_archived"),
  session_id: Schema.String,
  archived_messages: Schema.Number,
  archive_id: optional(Schema.String)
})

export const ContextPressureNotification = Schema.Struct({
  type: Schema.Literal("context_pressure_notification"),
  session_id: Schema.String,
  level: Schema.String,
  used_tokens: Schema.Number,
  max_tokens: Schema.Number
})

export const SubAgentEvent = Schema.Struct({
  type: Schema.Literal("sub_agent_event"),
  parent_session_id: Schema.String,
  child_session_id: Schema.String,
  event: Schema.Unknown
})

export const SubAgentHeartbeat = Schema.Struct({
  type: Schema.Literal("sub_agent_heartbeat"),
  parent_session_id: Schema.String,
  child_session_id: Schema.String,
  elapsed_ms: optional(Schema.Number)
})

export const BashCompleted = Schema.Struct({
  type: Schema.Literal("bash_completed"),
  session_id: Schema.String,
  command: Schema.String,
  exit_code: Schema.Number
})

export const RunnerProgress = Schema.Struct({
  type: Schema.Literal("runner_progress"),
  session_id: Schema.String,
  message: Schema.String,
  progress: optional(Schema.Number)
})

export const PermissionPostureActivated = Schema.Struct({
  type: Schema.Literal("permission_posture_activated"),
  session_id: Schema.String,
  posture: Schema.String
})

export const ChildApprovalRequested = Schema.Struct({
  type: Schema.Literal("child_approval_requested"),
  parent_session_id: Schema.String,
  child_session_id: Schema.String,
  request_id: Schema.String,
  tool_name: Schema.String,
  input: optional(Schema.Unknown)
})

export const Notification = Schema.Struct({
  type: Schema.Literal("notification"),
  message: Schema.String,
  level: optional(Schema.String),
  title: optional(Schema.String)
})

// ---------------------------------------------------------------------------------------------------------------
// The union and its classification
// ---------------------------------------------------------------------------------------------------------------

const durableMembers = [
  MessageAppended,
  SessionHistoryCommitted,
  SessionCreated,
  SessionDeleted,
  SessionCleared,
  SessionTitleUpdated,
  SessionPinnedUpdated,
  TaskListUpdated,
  TaskListItemProgress,
  TaskListCompleted,
  TaskEvaluationCompleted,
  TaskEvaluationCancelled,
  GoldEvaluationCancelled,
  PlanModeEntered,
  PlanModeExited,
  PlanFileUpdated,
  SubAgentStarted,
  SubAgentCompleted,
  ChildApprovalChanged,
  NeedClarification,
  ToolApprovalRequested,
  ExecutionStarted,
  BudgetExceeded,
  Complete,
  Cancelled,
  AgentError,
  WorkflowChanged,
  WorkflowInvalid,
  WorkflowRecovered,
  WorkflowActivated,
  WorkflowDeactivated,
  ProjectCreated,
  ProjectUpdated,
  ProjectArchived,
  SessionProjectUpdated,
  ConfigChanged,
  ConfigInvalid,
  ConfigRecovered
] as const

const ephemeralMembers = [
  Token,
  ReasoningToken,
  ToolToken,
  ToolStart,
  ToolComplete,
  ToolError,
  ToolLifecycle,
  HookLifecycle,
  TaskEvaluationStarted,
  GoldEvaluationStarted,
  GoldEvaluationCompleted,
  GoalStatusChanged,
  TokenBudgetUpdated,
  ContextCompressionStatus,
  ContextSummarized,
  ContextArchived,
  ContextPressureNotification,
  SubAgentEvent,
  SubAgentHeartbeat,
  BashCompleted,
  RunnerProgress,
  PermissionPostureActivated,
  ChildApprovalRequested,
  Notification
] as const

/** The agent event catalog: a union internally tagged by `type`. */
export const AgentEvent = Schema.Union(...durableMembers, ...ephemeralMembers)
export type AgentEvent = typeof AgentEvent.Type
export type AgentEventEncoded = typeof AgentEvent.Encoded
export type AgentEventType = AgentEvent["type"]

/** Tags of the events the feed journals (38). Derived from the member list, so it cannot drift from the union. */
export const durableTypes: ReadonlySet<AgentEventType> = new Set<AgentEventType>(
  durableMembers.map((member) => member.fields.type.literals[0])
)

/** Tags of the events that are never journaled (24). */
export const ephemeralTypes: ReadonlySet<AgentEventType> = new Set<AgentEventType>(
  ephemeralMembers.map((member) => member.fields.type.literals[0])
)

/** `true` for events the feed journals. One set lookup: this runs for every recorded event. */
export const isDurableChange = (event: AgentEvent): boolean => durableTypes.has(event.type)

/**
 * The session an event names by itself: `session_id` for the session events, `task_list.session_id` for
 * `task_list_updated`, `parent_session_id` for the sub-agent and child-approval events, none for the rest.
 * Exhaustive over the catalog: adding a member without routing it is a type error.
 */
export const sessionIdOf = (event: AgentEvent): string | undefined => {
  switch (event.type) {
    case "message_appended":
    case "session_history_committed":
    case "session_created":
    case "session_deleted":
    case "session_cleared":
    case "session_title_updated":
    case "session_pinned_updated":
    case "task_list_item_progress":
    case "task_list_completed":
    case "task_evaluation_completed":
    case "task_evaluation_cancelled":
    case "gold_evaluation_cancelled":
    case "plan_mode_entered":
    case "plan_mode_exited":
    case "plan_file_updated":
    case "need_clarification":
    case "tool_approval_requested":
    case "execution_started":
    case "budget_exceeded":
    case "session_project_updated":
    case "task_evaluation_started":
    case "gold_evaluation_started":
    case "gold_evaluation_completed":
    case "goal_status_changed":
    case "token_budget_updated":
    case "context_compression_status":
    case "context_summarized":
    case "context_archived":
    case "context_pressure_notification":
    case "bash_completed":
    case "runner_progress":
    case "permission_posture_activated":
      return event.session_id
    case "task_list_updated":
      return event.task_list.session_id
    case "sub_agent_started":
    case "sub_agent_completed":
    case "sub_agent_event":
    case "sub_agent_heartbeat":
    case "child_approval_changed":
    case "child_approval_requested":
      return event.parent_session_id
    case "complete":
    case "cancelled":
    case "error":
    case "workflow_changed":
    case "workflow_invalid":
    case "workflow_recovered":
    case "workflow_activated":
    case "workflow_deactivated":
    case "project_created":
    case "project_updated":
    case "project_archived":
    case "config.changed":
    case "config.invalid":
    case "config.recovered":
    case "token":
    case "reasoning_token":
    case "tool_token":
    case "tool_start":
    case "tool_complete":
    case "tool_error":
    case "tool_lifecycle":
    case "hook_lifecycle":
    case "notification":
      return undefined
    default:
      return absurd(event)
  }
}

/** The agent catalog as a feed domain: the default domain of the change feed. */
export const AgentDomain: FeedDomain<AgentEvent, AgentEventEncoded> = {
  schema: AgentEvent,
  isDurable: isDurableChange,
  sessionId: sessionIdOf
}

const decodeUnknown = Schema.decodeUnknownEither(AgentEvent)

/**
 * Whether parsed JSON is an event in canonical form: one that decoding would only copy (its
 * type's fields, in order, and nothing else), so that it is its own decoded and encoded form.
 */
export const isCanonicalAgentEvent: CanonicalCheck = canonicalCheck(AgentEvent)

/**
 * Decodes an event from outside (an HTTP body, a command line), answering what is wrong
 * with the one field at fault (`events[3].event.type`) rather than the whole union's mismatch.
 */
export const decodeAgentEvent = (
  field: string,
  input: unknown
): Either.Either<AgentEvent, { readonly field: string; readonly message: string }> => {
  if (input === undefined) return Either.left({ field, message: `${field} is missing` })
  const type = typeof input === "object" && input !== null ? (input as { type?: unknown }).type : undefined
  if (typeof type !== "string") {
    return Either.left({ field: `${field}.type`, message: `${field}.type must be an event type string` })
  }
  if (!durableTypes.has(type as AgentEventType) && !ephemeralTypes.has(type as AgentEventType)) {
    return Either.left({ field: `${field}.type`, message: `unknown event type '${type}'` })
  }
  return Either.mapLeft(decodeUnknown(input), (error) => {
    const issue = ParseResult.ArrayFormatter.formatErrorSync(error)[0]
    const path =
      issue === undefined ? "" : issue.path.map((p) => (typeof p === "number" ? `[${p}]` : `.${String(p)}`)).join("")
    return { field: field + path, message: `${field}${path}: ${issue?.message ?? "invalid"} (type '${type}')` }
  })
}
