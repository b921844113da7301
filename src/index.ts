/**
 * The package's entry point: each public module as a namespace, the way `effect` exports its
 * own (`import { ChangeFeed } from "effect-change-feed"`, then `ChangeFeed.layer(...)` and the
 * `ChangeFeed.ChangeFeed` tag). Every module is importable by its path as well
 * (`effect-change-feed/ChangeFeed`, `effect-change-feed/Domain/AgentEvent`), which loads only
 * what that module needs: a client alone need not load the server.
 */
export * as Access from "./Access.js"
export * as Account from "./Domain/Account.js"
export * as AgentEvent from "./Domain/AgentEvent.js"
export * as Api from "./Api.js"
export * as ChangeEvent from "./Domain/ChangeEvent.js"
export * as ChangeFeed from "./ChangeFeed.js"
export * as ChangeFeeds from "./ChangeFeeds.js"
export * as Client from "./Client.js"
export * as Cursor from "./Domain/Cursor.js"
export * as Errors from "./Domain/Errors.js"
export * as FeedDomain from "./Domain/FeedDomain.js"
export * as FeedItem from "./Domain/FeedItem.js"
export * as Http from "./Http.js"
export * as FileJournal from "./Journal/File.js"
export * as Journal from "./Journal.js"
export * as MemoryJournal from "./Journal/Memory.js"
