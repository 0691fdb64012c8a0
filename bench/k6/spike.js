// The reference spike profile as a k6 script: both flows per virtual user, the reference
// stages, thresholds, and the latency definition of `tickstream load`.
//
//   k6 run bench/k6/spike.js                        # against http://127.0.0.1:8080, full length
//   TARGET=http://127.0.0.1:18407 TIME_SCALE=0.15 k6 run bench/k6/spike.js
//
// Each iteration is one user's visit: flow 1 creates a session (POST /api/v1/sessions with
// TICKERS random tickers of the server's universe), flow 2 holds its WebSocket for HOLD_S
// seconds, reading and parsing every message as a browser would (JSON.parse), then closes it and
// the VU starts over. Latency is `now - ts` per ticker update, in ms, for every message except
// each connection's first (the snapshot, whose `ts` is the age of the last price, not a delivery:
// the same rule as `tickstream load`). `TOKEN` (a JWT) is sent when the server runs --auth jwt.
//
// Environment: TARGET, TIME_SCALE (1 = the reference 5m40s), HOLD_S (15), TICKERS (5),
// P99_MS (the latency threshold, 100), TOKEN, MAX_RATE_HZ (the session's `max_rate_hz`, unset).
import http from 'k6/http';
import { check } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';
import { setTimeout } from 'k6/timers';
import { WebSocket } from 'k6/experimental/websockets';

const TARGET = __ENV.TARGET || 'http://127.0.0.1:8080';
const SCALE = Number(__ENV.TIME_SCALE || 1);
const HOLD_MS = Number(__ENV.HOLD_S || 15) * 1000;
const TICKERS = Number(__ENV.TICKERS || 5);
const P99_MS = Number(__ENV.P99_MS || 100);
const TOKEN = __ENV.TOKEN || '';
const MAX_RATE_HZ = __ENV.MAX_RATE_HZ ? Number(__ENV.MAX_RATE_HZ) : undefined;

// The reference shape: 3m → 1000, 1m at 1000, 30s → 1500, 1m at 1500, 10s → 0.
const REFERENCE = [[180, 1000], [60, 1000], [30, 1500], [60, 1500], [10, 0]];

export const options = {
  scenarios: {
    spike: {
      executor: 'ramping-vus',
      startVUs: 0,
      stages: REFERENCE.map(([s, target]) => ({ duration: `${Math.max(1, Math.round(s * SCALE))}s`, target })),
      // k6 ends the run abruptly at the last stage, as the reference does.
      gracefulRampDown: '0s',
      gracefulStop: '0s',
    },
  },
  thresholds: {
    session_ok: ['rate>=1'],
    ws_ok: ['rate>=1'],
    tick_latency_ms: [`p(99)<${P99_MS}`],
  },
  summaryTrendStats: ['avg', 'med', 'p(90)', 'p(99)', 'max'],
};

const sessionOk = new Rate('session_ok');
const wsOk = new Rate('ws_ok');
const latency = new Trend('tick_latency_ms');
const updates = new Counter('updates');
const messages = new Counter('data_messages');

const headers = { 'content-type': 'application/json' };
if (TOKEN) headers.authorization = `Bearer ${TOKEN}`;

export function setup() {
  const res = http.get(`${TARGET}/api/v1/tickers`, { headers });
  const universe = res.status === 200 ? res.json('tickers') : [];
  if (universe.length === 0) throw new Error(`no tickers at ${TARGET} (status ${res.status})`);
  return { universe };
}

export default function (data) {
  const u = data.universe;
  const tickers = [];
  while (tickers.length < Math.min(TICKERS, u.length)) {
    const t = u[Math.floor(Math.random() * u.length)];
    if (!tickers.includes(t)) tickers.push(t);
  }
  // Flow 1: create a session.
  const res = http.post(`${TARGET}/api/v1/sessions`, JSON.stringify({ tickers, max_rate_hz: MAX_RATE_HZ }), { headers });
  const created = check(res, { 'session created': (r) => r.status === 201 });
  sessionOk.add(created);
  if (!created) return;
  const id = res.json('session_id');
  // Flow 2: stream it for HOLD_S, then leave.
  const q = TOKEN ? `session_id=${id}&token=${TOKEN}` : `session_id=${id}`;
  const ws = new WebSocket(`${TARGET.replace(/^http/, 'ws')}/ws?${q}`);
  let opened = false;
  let first = true;
  ws.onopen = () => {
    opened = true;
    setTimeout(() => ws.close(), HOLD_MS);
  };
  ws.onmessage = (e) => {
    const now = Date.now();
    const m = JSON.parse(e.data);
    if (m.type !== 'snapshot' && m.type !== 'prices') return;
    messages.add(1);
    updates.add(m.prices.length);
    if (first) {
      first = false;
      return;
    }
    for (const p of m.prices) latency.add(Math.max(0, now - p.ts));
  };
  ws.onerror = () => {
    if (!opened) wsOk.add(false);
  };
  ws.onclose = () => {
    if (opened) wsOk.add(true);
  };
}
