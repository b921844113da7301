#!/usr/bin/env node
// Runs the TypeScript sources directly through tsx, so the command works from a plain checkout.
import { register } from "tsx/esm/api"

register()
await import("../src/bin.ts")
