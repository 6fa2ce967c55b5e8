#!/usr/bin/env python3
"""Small loopback helpers for bench/*.sh (standard library only).

  helpers.py silent-server HOST PORT
      Accepts connections and never writes; closes a connection when the peer does.
  helpers.py idle-clients HOST PORT COUNT READY_FILE HOLD_SECONDS
      Opens COUNT connections to HOST:PORT from source addresses 127.0.0.2..127.0.0.9
      (round robin, so no source runs out of ephemeral ports), writes the number opened
      to READY_FILE, then holds them for at most HOLD_SECONDS (or until SIGTERM).
  helpers.py listener HOST PORT
      Accepts and closes connections (a keepalive target that stays up).
"""
import asyncio
import os
import signal
import socket
import sys
import time


def silent_server(host, port):
    async def handle(reader, writer):
        try:
            while await reader.read(65536):
                pass
        except ConnectionError:
            pass
        writer.close()

    async def main():
        srv = await asyncio.start_server(handle, host, port, backlog=4096, reuse_address=True)
        async with srv:
            await srv.serve_forever()

    asyncio.run(main())


def idle_clients(host, port, count, ready_file, hold):
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    socks = []
    deadline = time.monotonic() + 60
    for i in range(count):
        src = "127.0.0.%d" % (2 + i % 8)
        while True:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((src, 0))
            s.settimeout(5)
            try:
                s.connect((host, port))
                break
            except OSError as e:
                s.close()
                if time.monotonic() > deadline:
                    print("idle-clients: %d opened, then %s" % (len(socks), e), file=sys.stderr)
                    sys.exit(1)
                time.sleep(0.05)
        socks.append(s)
    # A connection the proxy accepted may still be waiting for its backend connect;
    # give it a moment, then make sure none was closed by the proxy.
    time.sleep(1.0)
    alive = 0
    for s in socks:
        s.setblocking(False)
        try:
            data = s.recv(1, socket.MSG_PEEK)
            if data:
                alive += 1  # got bytes: alive (should not happen with a silent backend)
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    tmp = ready_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % alive)
    os.rename(tmp, ready_file)
    time.sleep(hold)


def listener(host, port):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, port))
    srv.listen(128)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        c, _ = srv.accept()
        c.close()


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "silent-server":
        silent_server(args[0], int(args[1]))
    elif cmd == "idle-clients":
        idle_clients(args[0], int(args[1]), int(args[2]), args[3], float(args[4]))
    elif cmd == "listener":
        listener(args[0], int(args[1]))
    else:
        sys.exit("unknown command " + cmd)
