# The feed service as an image: built in one stage, run in another from the compiled build and
# the production dependencies only (no TypeScript, no tsx).
#
#   docker build -t effect-change-feed .
#   docker run -d --name feed -p 8787:8787 -v feed-data:/data/feed effect-change-feed
#
# `node dist/main.js` is PID 1, with no npm or shell in between: `docker stop` sends SIGTERM to the
# server itself, which ends open streams, journals everything accepted, releases the journal's
# lock and exits 0. The journals live on the volume at /data/feed (FEED_DIR).

FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

FROM node:20-bookworm-slim
# The journal locks its directory with util-linux's `flock`: essential in Debian, so present,
# but installed here should a base image ever come without it.
RUN command -v flock >/dev/null || \
    (apt-get update && apt-get install -y --no-install-recommends util-linux && rm -rf /var/lib/apt/lists/*)
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY bin ./bin
# Owned by the unprivileged user before it becomes a volume: a new volume starts as a copy of it.
RUN mkdir -p /data/feed && chown node:node /data/feed
ENV HOST=0.0.0.0 PORT=8787 FEED_DIR=/data/feed
VOLUME ["/data/feed"]
EXPOSE 8787
USER node
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 CMD ["node", "bin/healthcheck.js"]
CMD ["node", "dist/main.js"]
