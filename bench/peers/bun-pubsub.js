// Bun's built-in WebSocket pub/sub (uWebSockets underneath) as a peer for `scripts/bench`:
// speaks the nchan dialect `tickstream load --peer nchan` already uses.
//   POST /pub/TICKER  body = the message  → server.publish(TICKER, body), 201
//   GET  /sub/A,B,C   WebSocket           → subscribed to A, B and C; the newest message of each
//                                           on connect (the snapshot's role)
// One process, one thread (Bun's event loop): `PORT=18408 bun bench/peers/bun-pubsub.js`.
const last = new Map();
const server = Bun.serve({
  port: Number(process.env.PORT || 18408),
  hostname: '127.0.0.1',
  async fetch(req, server) {
    const path = new URL(req.url).pathname;
    if (path.startsWith('/sub/')) {
      const channels = decodeURIComponent(path.slice(5)).split(',').filter(Boolean);
      return server.upgrade(req, { data: { channels } }) ? undefined : new Response('upgrade failed', { status: 400 });
    }
    if (path.startsWith('/pub/') && req.method === 'POST') {
      const channel = decodeURIComponent(path.slice(5));
      const body = await req.text();
      last.set(channel, body);
      server.publish(channel, body);
      return new Response(null, { status: 201 });
    }
    return new Response('not found', { status: 404 });
  },
  websocket: {
    open(ws) {
      for (const c of ws.data.channels) {
        ws.subscribe(c);
        const m = last.get(c);
        if (m !== undefined) ws.send(m);
      }
    },
    message() {},
  },
});
console.log(`bun pub/sub listening on ${server.hostname}:${server.port}`);
