"""A tiny HTTP front end to PostgreSQL with a pool of persistent connections.

    python pgfront.py PGHOST PGPORT DBNAME POOL ROWS SPAN

Like an application server with a connection pool: it opens POOL ``psql`` sessions at start
(so the database backends exist before any load), prints its HTTP port on stdout, and
answers every ``GET /`` with ``SELECT sum(v) FROM t WHERE id BETWEEN a AND a + SPAN`` for a
random ``a`` in 1..ROWS, run on a free session of the pool. Each query reads its range of
the table and index through PostgreSQL's shared buffers, so under load every backend maps
more and more of the shared segment (its RSS rises through RssShmem) while the segment
itself (``Shmem``) grows only once.

``GET /_corpus/ready`` answers without touching the database. Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import http.server
import queue
import random
import subprocess
import sys


def main() -> None:
    host, port, db, pool_n, rows, span = sys.argv[1:7]
    pool: queue.Queue[subprocess.Popen[str]] = queue.Queue()
    sessions = []
    for _ in range(int(pool_n)):
        p = subprocess.Popen(
            ["psql", "-X", "-A", "-t", "-q", "-h", host, "-p", port, "-U", "postgres", "-d", db,
             "-v", "ON_ERROR_STOP=0"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        sessions.append(p)
        # one round trip: the backend is up before the port is announced
        p.stdin.write("SELECT 1;\n")
        p.stdin.flush()
        if p.stdout.readline().strip() != "1":
            raise SystemExit("pgfront: a psql session did not answer")
        pool.put(p)
    n_rows, n_span = int(rows), int(span)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            if self.path.startswith("/_corpus/"):
                body = b"ready"
            else:
                a = random.randint(1, max(1, n_rows - n_span))
                p = pool.get()
                try:
                    p.stdin.write(f"SELECT sum(v) FROM t WHERE id BETWEEN {a} AND {a + n_span};\n")
                    p.stdin.flush()
                    body = p.stdout.readline().strip().encode()
                finally:
                    pool.put(p)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address) -> None:
            pass  # a client gone mid-answer (the load stopping) is not an error here

    srv = Server(("127.0.0.1", 0), Handler)
    print(srv.server_address[1], flush=True)
    try:
        srv.serve_forever()
    finally:
        for p in sessions:
            p.kill()


if __name__ == "__main__":
    main()
