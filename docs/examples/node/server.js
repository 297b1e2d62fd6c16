// SPDX-License-Identifier: MIT
// A Node.js HTTP server on the socket bindonce hands it:
//
//     bindonce -l 127.0.0.1:8000 -w 2 --watch . -- node server.js
"use strict";
const http = require("http");

const MESSAGE = "hello from the node example\n";

const server = http.createServer((req, res) => {
  res.writeHead(200, { "Content-Length": Buffer.byteLength(MESSAGE) });
  res.end(MESSAGE);
});

// LISTEN_PID names us when bindonce started us directly: then the socket is fd 3.
if (process.env.LISTEN_PID === String(process.pid)) {
  server.listen({ fd: 3 });
} else {
  server.listen(8000, "127.0.0.1");
}

// bindonce stops a worker with SIGTERM: finish what was accepted, then exit.
process.on("SIGTERM", () => server.close(() => process.exit(0)));
