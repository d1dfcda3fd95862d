# receipt-gateway: multi-stage build, production dependencies only, non-root user.
#   docker build -t receipt-gateway .
#   docker run --rm -p 8080:8080 -e JWT_SECRET_KEY=... -e UPSTREAM_URL=http://receipts:9000 receipt-gateway
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY scripts ./scripts
COPY gateway ./gateway
COPY policies ./policies
COPY upstream-mock ./upstream-mock
COPY bench ./bench
RUN npm run build

FROM node:20-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json gateway.yaml ./
COPY schema ./schema
RUN mkdir -p /app/logs && chown -R node:node /app/logs
USER node
EXPOSE 8080 9901
# The admin listener binds 127.0.0.1 by default, which is reachable from inside the container.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD node -e "fetch('http://127.0.0.1:'+(process.env.GATEWAY_ADMIN_PORT||9901)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
# bounded-heap V8 flags: see gateway/node-flags.ts
ENTRYPOINT ["node", "--max-semi-space-size=8", "--heap-growing-percent=20", "dist/gateway/cli.js"]
CMD ["start", "--config", "gateway.yaml"]
