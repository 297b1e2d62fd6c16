// A Node.js HTTP server for bindonce: listen on the socket passed at fd 3.
// Node checks neither LISTEN_PID nor LISTEN_FDS: take fd 3 only when they say it is ours.
'use strict';
const http = require('http');

if (process.env.LISTEN_PID !== String(process.pid) || !(Number(process.env.LISTEN_FDS) >= 1)) {
  console.error('node_server: no socket passed (LISTEN_PID/LISTEN_FDS)');
  process.exit(1);
}

const server = http.createServer((req, res) => {
  const body = `ok node pid=${process.pid}\n`;
  res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
});
server.listen({ fd: 3 });

// Without a handler SIGTERM kills Node at once, with whatever it was answering.
// server.close() stops accepting and exits once the open connections are done;
// idle keep-alive connections would hold it open, so close those too.
process.on('SIGTERM', () => {
  server.close(() => process.exit(0));
  server.closeIdleConnections();
});
