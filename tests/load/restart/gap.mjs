// EventSource clients (the npm `eventsource` package, not pushgate code)
// and one publisher, through whatever happens to the gateway meanwhile
// (tests/load/restart.sh restarts it). Prints one JSON line: how long each
// client went without events, publish→receive latency, losses, duplicates.
//
// node gap.mjs --url http://127.0.0.1:8080 --clients 200 --rate 20 --seconds 40 --ready FILE
import { EventSource } from "eventsource";
import { writeFileSync } from "node:fs";

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : dflt;
};
const base = arg("url", "http://127.0.0.1:8080");
const clients = Number(arg("clients", "200"));
const rate = Number(arg("rate", "20"));
const seconds = Number(arg("seconds", "40"));
const drainSeconds = Number(arg("drain", "60"));
const readyFile = arg("ready", "");
const topic = arg("topic", `gap-${process.pid}`);

const now = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// One record per client.
const subs = [];
for (let c = 0; c < clients; c++) {
  const s = {
    seen: new Map(), // event index → times seen
    latencies: [],
    opens: 0,
    errors: 0,
    lastEvent: null, // time of the last event
    longestSilence: 0, // longest time between two events (ms)
    silences: [],
    es: null,
  };
  s.es = new EventSource(`${base}/v1/stream?topic=${encodeURIComponent(topic)}`);
  s.es.addEventListener("open", () => s.opens++);
  s.es.addEventListener("error", () => s.errors++);
  s.es.addEventListener("message", (ev) => {
    const t = now();
    const { i, at } = JSON.parse(ev.data);
    s.seen.set(i, (s.seen.get(i) ?? 0) + 1);
    s.latencies.push(t - at);
    if (s.lastEvent !== null) {
      const gap = t - s.lastEvent;
      s.silences.push(gap);
      if (gap > s.longestSilence) s.longestSilence = gap;
    }
    s.lastEvent = t;
  });
  subs.push(s);
}

// Every client open before the first publish.
const openDeadline = now() + 30_000;
while (subs.some((s) => s.opens === 0)) {
  if (now() > openDeadline) {
    console.error(`only ${subs.filter((s) => s.opens > 0).length} of ${clients} opened`);
    process.exit(2);
  }
  await sleep(20);
}

// Publishes one event, retried with its idempotency key until acknowledged.
async function publish(i) {
  const body = JSON.stringify({ i, at: now() });
  for (let attempt = 0; attempt < 600; attempt++) {
    try {
      const r = await fetch(`${base}/v1/topics/${encodeURIComponent(topic)}/events`, {
        method: "POST",
        headers: { "idempotency-key": `gap-${process.pid}-${i}` },
        body,
        signal: AbortSignal.timeout(2000),
      });
      if (r.status === 201) return attempt;
    } catch {
      // the gateway is restarting: try again
    }
    await sleep(100);
  }
  throw new Error(`event ${i} was never acknowledged`);
}

if (readyFile) writeFileSync(readyFile, "publishing\n");
const total = Math.round(rate * seconds);
const started = now();
let retried = 0;
const inflight = [];
for (let i = 0; i < total; i++) {
  const due = started + (i * 1000) / rate;
  const wait = due - now();
  if (wait > 0) await sleep(wait);
  inflight.push(publish(i).then((attempts) => (retried += attempts > 0 ? 1 : 0)));
}
await Promise.all(inflight);

// Wait for every client to have every event (bounded).
const drainDeadline = now() + drainSeconds * 1000;
while (subs.some((s) => s.seen.size < total) && now() < drainDeadline) await sleep(50);
for (const s of subs) s.es.close();

const pct = (xs, p) => {
  if (xs.length === 0) return null;
  const v = [...xs].sort((a, b) => a - b);
  return v[Math.min(v.length - 1, Math.floor((p / 100) * v.length))];
};
const round = (x) => (x === null ? null : Math.round(x * 10) / 10);
const latencies = subs.flatMap((s) => s.latencies);
const longest = subs.map((s) => s.longestSilence);
const lost = subs.reduce((n, s) => n + (total - s.seen.size), 0);
const dups = subs.reduce((n, s) => n + [...s.seen.values()].reduce((d, k) => d + k - 1, 0), 0);
console.log(
  JSON.stringify({
    clients,
    published: total,
    publishes_retried: retried,
    lost,
    dups,
    opens_per_client_p50: pct(subs.map((s) => s.opens), 50),
    opens_per_client_max: pct(subs.map((s) => s.opens), 100),
    longest_silence_ms: { p50: round(pct(longest, 50)), p99: round(pct(longest, 99)), max: round(pct(longest, 100)) },
    latency_ms: {
      p50: round(pct(latencies, 50)),
      p99: round(pct(latencies, 99)),
      p999: round(pct(latencies, 99.9)),
      max: round(pct(latencies, 100)),
    },
  }),
);
process.exit(lost === 0 && dups === 0 ? 0 : 1);
