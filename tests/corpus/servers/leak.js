// A Node.js HTTP server that leaks: every request keeps LEAK_BYTES (argv[2], default 16384)
// in a global array, written so the pages are really used. Listens on 127.0.0.1 on a free
// port and prints it. GET /_corpus/stats answers with what it kept (not counted, not kept).
'use strict';
const http = require('http');

const LEAK_BYTES = parseInt(process.argv[2] || '16384', 10);
const kept = [];
let requests = 0;

const server = http.createServer((req, res) => {
  if (req.url.startsWith('/_corpus/')) {
    const body = JSON.stringify({
      requests, kept: kept.length, kept_bytes: kept.length * LEAK_BYTES,
      rss: process.memoryUsage().rss,
    });
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': body.length });
    res.end(body);
    return;
  }
  requests += 1;
  kept.push(Buffer.alloc(LEAK_BYTES, requests & 0xff));
  res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': 2 });
  res.end('ok');
});
server.keepAliveTimeout = 5000;
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${server.address().port}\n`);
});
process.on('SIGTERM', () => process.exit(0));
