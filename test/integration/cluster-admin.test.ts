/**
 * `workers: 2`: the admin answers that need the whole gateway (/metrics, /api/decisions/{id},
 * /api/dashboard) are the same whichever worker accepts the admin connection. Real CLI, real redis-server,
 * real TCP; which worker served each request is read from /proc (the worker process that
 * holds the server end of the connection), so the test knows both workers served some.
 */
import t from 'tap';
import fs from 'node:fs';
import net from 'node:net';
import http from 'node:http';
import { once } from 'node:events';
import { startCluster } from '../helpers/cli-cluster.js';
import { eventually } from '../helpers/wait.js';

/** The inode of the server end of the loopback connection serverPort ← clientPort (/proc/net/tcp). */
function serverSocketInode(serverPort: number, clientPort: number): string | undefined {
  const hex = (p: number) => p.toString(16).toUpperCase().padStart(4, '0');
  for (const line of fs.readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10) continue;
    if (f[1]!.endsWith(`:${hex(serverPort)}`) && f[2]!.endsWith(`:${hex(clientPort)}`)) return f[9];
  }
  return undefined;
}

/** Which of `pids` holds the socket with this inode. */
function holder(inode: string, pids: readonly number[]): number | undefined {
  for (const pid of pids) {
    let fds: string[] = [];
    try {
      fds = fs.readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        if (fs.readlinkSync(`/proc/${pid}/fd/${fd}`) === `socket:[${inode}]`) return pid;
      } catch {
        // closed meanwhile
      }
    }
  }
  return undefined;
}

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  /** the pid of the worker that took the connection */
  worker: number;
}

/** One GET on a new connection; which worker took the connection is found before it is sent. */
async function get(port: number, workers: readonly number[], target: string): Promise<Answer> {
  const sock = net.connect(port, '127.0.0.1');
  await once(sock, 'connect');
  const clientPort = sock.localPort!;
  let worker: number | undefined;
  await eventually('a worker holds the connection', () => {
    const inode = serverSocketInode(port, clientPort);
    worker = inode === undefined ? undefined : holder(inode, workers);
    return worker !== undefined;
  });
  const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
    const req = http.request(
      { createConnection: () => sock, path: target, headers: { host: '127.0.0.1', connection: 'close' } },
      resolve,
    );
    req.on('error', reject);
    req.end();
  });
  let body = '';
  for await (const c of res) body += (c as Buffer).toString();
  return { status: res.statusCode!, headers: res.headers, body, worker: worker! };
}

/** The value of one sample of the exposition (`name{labels}`), undefined when absent. */
function sample(text: string, series: string): number | undefined {
  for (const line of text.split('\n'))
    if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1));
  return undefined;
}

t.test('workers: 2: /metrics, /api/decisions and /api/dashboard answer for the whole gateway', async (t) => {
  const { port, adminPort, child, exited, output } = await startCluster(t, {
    name: 'cluster-admin',
    rateLimit: '1000 per minute',
  });
  const workers = () => [...output().matchAll(/\[worker (\d+)\]/g)].map((m) => Number(m[1]));
  // (teardowns run last first: this one before startCluster's) a worker the test stopped is let go on
  // before the CLI is stopped
  t.teardown(() => {
    for (const pid of workers()) {
      try {
        process.kill(pid, 'SIGCONT');
      } catch {
        // gone
      }
    }
  });
  await eventually('both workers listen', () => workers().length === 2, 60_000);
  const pids = workers();

  // 20 requests, each on a new connection: 14 allowed, 6 refused by pattern_block (xss)
  const sent: Answer[] = [];
  for (let i = 0; i < 20; i++)
    sent.push(
      await get(port, pids, i % 10 < 3 ? '/api/health?q=%3Cscript%3Ealert(1)%3C/script%3E' : '/api/health'),
    );
  t.same(
    sent.map((s) => s.status).sort(),
    [...Array<number>(14).fill(200), ...Array<number>(6).fill(403)],
    'statuses',
  );
  const served = pids.map((p) => sent.filter((s) => s.worker === p).length);
  t.ok(
    served.every((n) => n > 0),
    `both workers served requests (${served.join(' and ')})`,
  );

  const admin = `http://127.0.0.1:${adminPort}`;
  const security = (await (await fetch(`${admin}/api/health/security`)).json()) as { score: number };
  const scrapers = new Set<number>();
  for (let i = 0; i < 20 && (i < 6 || scrapers.size < 2); i++) {
    const m = await get(adminPort, pids, '/metrics');
    scrapers.add(m.worker);
    const at = `scrape ${i} (worker ${m.worker}): `;
    t.equal(m.status, 200, `${at}200`);
    t.match(m.headers['content-type'], /^text\/plain; version=0\.0\.4/, `${at}the exposition format`);
    const text = m.body;
    t.equal(
      sample(text, 'gateway_requests_total{route="health",method="GET",code="200",decision="allow"}'),
      14,
      `${at}14 allowed`,
    );
    t.equal(
      sample(text, 'gateway_requests_total{route="health",method="GET",code="403",decision="deny"}'),
      6,
      `${at}6 denied`,
    );
    t.equal(sample(text, 'gateway_blocked_requests_total{reason="xss"}'), 6, `${at}6 blocked as xss`);
    t.equal(sample(text, 'gateway_request_duration_seconds_count{route="health"}'), 20, `${at}20 durations`);
    t.equal(
      sample(text, 'gateway_request_duration_seconds_bucket{le="+Inf",route="health"}'),
      20,
      `${at}+Inf bucket`,
    );
    t.equal(sample(text, 'gateway_upstream_duration_seconds_count{route="health"}'), 14, `${at}14 forwarded`);
    t.equal(sample(text, 'gateway_open_connections'), 0, `${at}no client connection open (summed)`);
    t.equal(sample(text, 'gateway_security_score'), security.score, `${at}the score, once`);
    t.ok((sample(text, 'process_start_time_seconds') ?? 0) > 0, `${at}the latest worker start`);
    t.equal(text.match(/^nodejs_version_info\{/gm)?.length, 1, `${at}one nodejs_version_info series`);
  }
  t.equal(scrapers.size, 2, 'scrapes answered by both workers');

  // a decision recorded by one worker is found through the other
  for (const s of sent) {
    const id = s.headers['x-request-id'] as string;
    let r = await get(adminPort, pids, `/api/decisions/${id}`);
    for (let k = 0; k < 20 && r.worker === s.worker; k++)
      r = await get(adminPort, pids, `/api/decisions/${id}`);
    t.not(r.worker, s.worker, 'asked of the other worker');
    const body = JSON.parse(r.body) as { request_id?: string; status?: number };
    t.equal(r.status, 200, `a decision of worker ${s.worker} asked of worker ${r.worker}`);
    t.equal(body.request_id, id);
    t.equal(body.status, s.status);
  }
  // the dashboard's figures: both workers' counts summed, both workers' denials, newest first
  const denied = sent.filter((s) => s.status === 403).map((s) => s.headers['x-request-id'] as string);
  const dashboards = new Set<number>();
  for (let i = 0; i < 20 && (i < 4 || dashboards.size < 2); i++) {
    const d = await get(adminPort, pids, '/api/dashboard');
    dashboards.add(d.worker);
    const at = `dashboard ${i} (worker ${d.worker}): `;
    t.equal(d.status, 200, `${at}200`);
    const body = JSON.parse(d.body) as {
      kpis: Record<string, unknown>;
      denials: { request_id: string; time: string; reason: string | null }[];
      config: { workers?: unknown };
    };
    t.match(
      body.kpis,
      {
        requests: 20,
        allowed: 14,
        denied: 6,
        monitored: 0,
        denials_by_reason: { xss: 6 },
        open_connections: 0,
      },
      `${at}the KPIs of both workers`,
    );
    t.ok((body.kpis.latency_p99_ms as number | null) !== null, `${at}a latency from the summed buckets`);
    t.same(
      body.denials.map((x) => x.request_id).sort(),
      [...denied].sort(),
      `${at}every denial of both workers`,
    );
    const times = body.denials.map((x) => x.time);
    t.same(times, [...times].sort().reverse(), `${at}denials newest first`);
    t.equal(body.config.workers, 2, `${at}the config (the answering worker's)`);
  }
  t.equal(dashboards.size, 2, 'dashboards answered by both workers');

  const unknown = await fetch(`${admin}/api/decisions/no-such-request`);
  t.equal(unknown.status, 404, 'an id no worker knows: 404');
  await unknown.arrayBuffer();

  // a worker that cannot answer (stopped): the scrape ends with a 503 that says so, never hangs;
  // the connection handed to the stopped worker itself is given up on and the scrape tried again
  const stopped = pids[0]!;
  process.kill(stopped, 'SIGSTOP');
  const running = async (target: string) => {
    let answer: { status: number; text: string } | undefined;
    await eventually(
      `${target} answered by the running worker`,
      async () => {
        try {
          const r = await fetch(`${admin}${target}`, {
            headers: { connection: 'close' },
            signal: AbortSignal.timeout(15_000),
          });
          answer = { status: r.status, text: await r.text() };
          return true;
        } catch {
          return false;
        }
      },
      60_000,
    );
    return answer!;
  };
  const refused = await running('/metrics');
  t.equal(refused.status, 503, 'a worker that does not answer: 503');
  t.match(refused.text, new RegExp(`worker ${stopped} did not answer within 2 s`), 'naming it');
  const board = await running('/api/dashboard');
  t.equal(board.status, 503, "the dashboard without a worker: 503, not one worker's figures");
  t.match(board.text, new RegExp(`worker ${stopped} did not answer within 2 s`), 'naming it');
  const undecided = await running('/api/decisions/no-such-request');
  t.equal(undecided.status, 503, 'a decision not every worker was asked for: 503, not 404');
  t.match(undecided.text, new RegExp(`worker ${stopped} did not answer within 2 s`), 'naming it');
  process.kill(stopped, 'SIGCONT');
  await eventually(
    'whole figures again',
    async () => (await get(adminPort, pids, '/metrics')).status === 200,
  );
  const again = await get(adminPort, pids, '/metrics');
  t.equal(
    sample(again.body, 'gateway_requests_total{route="health",method="GET",code="200",decision="allow"}'),
    14,
    'the same sums once it answers again',
  );

  child.kill('SIGTERM');
  t.equal(await exited, 0, 'exit 0');
});
