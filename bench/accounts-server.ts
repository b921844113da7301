/**
 * The service exactly as `npm start` runs it (`src/main.ts`: configuration from the
 * environment), as an entry point of its own so that section `accounts` can bundle it and run
 * it on plain `node` in a process of its own, like a deployed service.
 */
import "../src/main.js"
