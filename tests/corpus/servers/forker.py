"""A parent holding SHARED_MIB MiB of written memory forks N idle children that share it.

    python forker.py SHARED_MIB N SPREAD_S now|wait

The classic demonstration of the puzzle: every child's RSS includes the whole shared
buffer, so the sum of RSS counts it N + 1 times, while the memory really used (PSS, or
MemTotal - MemAvailable) holds it once. ``now`` forks at once; ``wait`` forks when a line
``go`` arrives on stdin. The N forks are spread over SPREAD_S seconds. Children touch
nothing: each closes its copy of a pipe's write end and blocks reading the pipe, so they all
exit when the parent does. Prints one JSON line when ready ({"pid"}) and one when every
child is forked ({"children", "fork_t"}: pids and time.monotonic() of each fork); then
waits for stdin to close.
"""

import json
import os
import sys
import time


def main() -> None:
    mib, n, spread, mode = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    shared = bytearray(b"\x5a") * (mib << 20)  # every page written: anonymous, resident
    r, w = os.pipe()
    print(json.dumps({"pid": os.getpid(), "shared_bytes": len(shared)}), flush=True)
    if mode == "wait" and sys.stdin.readline().strip() != "go":
        return
    children, fork_t = [], []
    for i in range(n):
        pid = os.fork()
        if pid == 0:
            os.close(w)
            os.read(r, 1)  # blocks until the parent exits (EOF)
            os._exit(0)
        children.append(pid)
        fork_t.append(time.monotonic())
        if spread and i < n - 1:
            time.sleep(spread / n)
    print(json.dumps({"children": children, "fork_t": fork_t}), flush=True)
    sys.stdin.read()  # until the test closes our stdin
    os.close(w)
    for pid in children:
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
