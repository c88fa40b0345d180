// The Node peers of bench/peers (graphile-worker, pg-boss), one measure per process so a failure stays in its cell.
//
//   node bench.mjs <graphile|pgboss> <latency|bulk|drain|pickup> <database url> <n> [rate]
//
// Prints one JSON object on stdout. Every job is the same no-op with the payload bench/run.py uses.
import { performance } from "node:perf_hooks";
import pg from "pg";
import { Logger, makeWorkerUtils, run, runMigrations } from "graphile-worker";
import PgBoss from "pg-boss";

const [system, measure, url, nText, rateText] = process.argv.slice(2);
const n = Number(nText);
const rate = Number(rateText || 200);
const PAYLOAD = { user_id: 42, text: "x".repeat(200) };
const TASK = "noop";
const graphileLogger = new Logger(() => () => {});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const quantile = (values, q) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
};

// Each system: setup (schema), enqueue inside a client's transaction, bulk, and a worker with a no-op handler.
const systems = {
  graphile: {
    async setup() {
      await runMigrations({ connectionString: url, logger: graphileLogger });
      const client = new pg.Client(url);
      await client.connect();
      await client.query("DELETE FROM graphile_worker._private_jobs");
      await client.end();
    },
    // graphile-worker's own SQL function, on the transaction's client: what `addJob` runs.
    enqueueIn: (client, payload) => client.query("SELECT graphile_worker.add_job($1, $2::json)", [TASK, payload]),
    async bulk(count) {
      const utils = await makeWorkerUtils({ connectionString: url, logger: graphileLogger });
      const specs = Array.from({ length: count }, () => ({ identifier: TASK, payload: PAYLOAD }));
      const started = performance.now();
      await utils.addJobs(specs);
      const elapsed = performance.now() - started;
      await utils.release();
      return elapsed;
    },
    // Concurrency 10: graphile-worker's docs run their performance test with concurrency 10 (and say to raise
    // it for I/O-bound tasks); a no-op task gains nothing more from it on 2 cores.
    async worker(onJob) {
      const runner = await run({
        connectionString: url, concurrency: 10, noHandleSignals: true, pollInterval: 2000, logger: graphileLogger,
        taskList: { [TASK]: async (payload) => onJob(payload) },
      });
      return () => runner.stop();
    },
  },
  pgboss: {
    boss: null,
    async setup() {
      this.boss = new PgBoss({ connectionString: url, max: 4, supervise: false, schedule: false });
      this.boss.on("error", () => {});
      await this.boss.start();
      await this.boss.deleteQueue(TASK).catch(() => {});
      await this.boss.createQueue(TASK);
      // Each measure starts from an empty queue (pg-boss keeps finished jobs, and a failed run may leave some).
      const client = new pg.Client(url);
      await client.connect();
      await client.query("TRUNCATE pgboss.job");
      await client.end();
    },
    // pg-boss's documented way into a caller's transaction: the `db` option, executing on that client.
    enqueueIn(client, payload) {
      return this.boss.send(TASK, JSON.parse(payload), { db: { executeSql: (text, values) => client.query(text, values) } });
    },
    async bulk(count) {
      const jobs = Array.from({ length: count }, () => ({ name: TASK, data: PAYLOAD }));
      const started = performance.now();
      await this.boss.insert(jobs);
      return performance.now() - started;
    },
    // pg-boss polls (minimum 0.5 s in v10); throughput comes from fetching batches, and two workers for 2 cores.
    async worker(onJob) {
      const ids = [];
      for (let i = 0; i < 2; i++) {
        ids.push(await this.boss.work(TASK, { batchSize: 100, pollingIntervalSeconds: 0.5 }, async (jobs) => {
          for (const job of jobs) onJob(job.data);
        }));
      }
      return () => this.boss.offWork(TASK);
    },
  },
};

const peer = systems[system];
if (!peer) throw new Error(`unknown system ${system}: graphile or pgboss`);
await peer.setup();
const client = new pg.Client(url);
await client.connect();
const result = { system, measure, n };

if (measure === "latency") {
  // One job per transaction; each round does the domain insert alone and with the enqueue, alternating, so drift
  // in the machine's load falls on both sides.
  await client.query("CREATE TABLE IF NOT EXISTS domain_order (id bigserial PRIMARY KEY, note text NOT NULL)");
  const body = JSON.stringify(PAYLOAD);
  const bare = [];
  const withJob = [];
  for (let i = 0; i < n + 100; i++) {
    let t = performance.now();
    await client.query("BEGIN");
    await client.query("INSERT INTO domain_order (note) VALUES ($1)", ["order"]);
    await client.query("COMMIT");
    const a = performance.now() - t;
    t = performance.now();
    await client.query("BEGIN");
    await client.query("INSERT INTO domain_order (note) VALUES ($1)", ["order"]);
    await peer.enqueueIn(client, body);
    await client.query("COMMIT");
    const b = performance.now() - t;
    if (i >= 100) { bare.push(a); withJob.push(b); } // the first 100 warm up plans and the connection
  }
  Object.assign(result, {
    bare_p50_ms: quantile(bare, 0.5), bare_p99_ms: quantile(bare, 0.99),
    with_p50_ms: quantile(withJob, 0.5), with_p99_ms: quantile(withJob, 0.99),
    added_p50_ms: quantile(withJob, 0.5) - quantile(bare, 0.5), added_p99_ms: quantile(withJob, 0.99) - quantile(bare, 0.99),
  });
} else if (measure === "bulk") {
  const ms = await peer.bulk(n);
  result.jobs_per_s = n / (ms / 1000);
} else if (measure === "drain") {
  await peer.bulk(n);
  let done = 0;
  let finish;
  const finished = new Promise((r) => { finish = r; });
  const started = performance.now();
  const stop = await peer.worker(() => { if (++done === n) finish(); });
  await finished;
  result.jobs_per_s = n / ((performance.now() - started) / 1000);
  await stop();
} else if (measure === "pickup") {
  // Enqueue + commit at `rate` jobs/s; each payload carries its sequence number, the handler notes its start.
  // A handler can start before COMMIT has returned to the producer, so both times are kept and paired at the end.
  const committed = new Map();
  const startedAt = new Map();
  let finish;
  const finished = new Promise((r) => { finish = r; });
  const stop = await peer.worker((payload) => {
    if (payload.seq !== undefined && !startedAt.has(payload.seq)) startedAt.set(payload.seq, performance.now());
    if (startedAt.size === n) finish();
  });
  await sleep(1000);
  const origin = performance.now();
  for (let seq = 0; seq < n; seq++) {
    const due = origin + (seq * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    await client.query("BEGIN");
    await peer.enqueueIn(client, JSON.stringify({ ...PAYLOAD, seq }));
    await client.query("COMMIT");
    committed.set(seq, performance.now());
  }
  await Promise.race([finished, sleep(60000)]);
  const latencies = [...startedAt].map(([seq, t]) => t - committed.get(seq));
  Object.assign(result, { p50_ms: quantile(latencies, 0.5), p99_ms: quantile(latencies, 0.99), handled: latencies.length });
  await stop();
} else {
  throw new Error(`unknown measure ${measure}: latency, bulk, drain or pickup`);
}

await client.end();
if (system === "pgboss") await peer.boss.stop({ graceful: false, wait: false }).catch(() => {});
console.log(JSON.stringify(result));
process.exit(0);
