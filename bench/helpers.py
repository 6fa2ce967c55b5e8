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
  helpers.py imap-server HOST[,HOST...] PORT
      An IMAP-like backend that holds idle sessions: greets every connection with
      "* OK [CAPABILITY IMAP4rev1 IDLE] ready", then reads and ignores whatever comes,
      and closes when the peer does. One thread (selectors/epoll), any number of
      listen addresses; the open-file soft limit is raised to the hard one.
  helpers.py imap-clients HOST PORT COUNT SOURCES READY_FILE HOLD_SECONDS [TIMEOUT]
      Opens COUNT connections to HOST:PORT (non-blocking, at most 64 connecting at a
      time) from the comma-separated SOURCES addresses in turn, reads each one's
      greeting (it must start "* OK"), and keeps every greeted connection open.
      Then checks that none has been closed since (MSG_PEEK), writes "ALIVE GREETED
      FAILED" to READY_FILE and holds them for at most HOLD_SECONDS (or until
      SIGTERM; they are closed with a reset, so no TIME_WAIT is left). Gives up on
      connecting after TIMEOUT seconds (300); a connection not greeted within 60 s
      counts as failed. The sockets bind with IP_BIND_ADDRESS_NO_PORT, so the port
      is picked at connect by the 4-tuple (and loopback TIME_WAITs are reused).
"""
import asyncio
import errno
import os
import resource
import selectors
import signal
import socket
import struct
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


def raise_nofile():
    """Soft open-file limit up to the hard one; returns the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


IMAP_GREETING = b"* OK [CAPABILITY IMAP4rev1 IDLE] ready\r\n"


def imap_server(hosts, port):
    raise_nofile()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sel = selectors.DefaultSelector()
    for host in hosts.split(","):
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((host, port))
        ls.listen(4096)
        ls.setblocking(False)
        sel.register(ls, selectors.EVENT_READ, None)
    while True:
        for key, _ in sel.select():
            s = key.fileobj
            if key.data is None:  # a listener: accept all that are queued
                while True:
                    try:
                        c, _ = s.accept()
                    except BlockingIOError:
                        break
                    except OSError as e:
                        if e.errno in (errno.EMFILE, errno.ENFILE):
                            print("imap-server: %s" % e, file=sys.stderr)
                            time.sleep(0.1)
                        break
                    c.setblocking(False)
                    try:
                        c.send(IMAP_GREETING)
                    except OSError:
                        c.close()
                        continue
                    sel.register(c, selectors.EVENT_READ, 1)
            else:
                try:
                    data = s.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(s)
                    s.close()


IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def imap_clients(host, port, count, sources, ready_file, hold, timeout):
    limit = raise_nofile()
    if count + 64 > limit:
        sys.exit("imap-clients: %d connections need more than the open-file limit %d" % (count, limit))
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    sources = sources.split(",")
    sel = selectors.DefaultSelector()
    linger_rst = struct.pack("ii", 1, 0)
    held = []
    pending = {}  # socket -> (started, bytes read so far)
    failed = {}  # reason -> count
    started = 0
    t0 = time.monotonic()
    deadline = t0 + timeout
    last_sweep = t0

    def fail(s, reason):
        failed[reason] = failed.get(reason, 0) + 1
        sel.unregister(s)
        del pending[s]
        s.close()

    while (started < count or pending) and not stop:
        now = time.monotonic()
        if now > deadline:
            for s in list(pending):
                fail(s, "timeout")
            break
        while started < count and len(pending) < 64:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_rst)
            s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            s.bind((sources[started % len(sources)], 0))
            s.setblocking(False)
            started += 1
            rc = s.connect_ex((host, port))
            if rc not in (0, errno.EINPROGRESS):
                failed[errno.errorcode.get(rc, str(rc))] = failed.get(errno.errorcode.get(rc, str(rc)), 0) + 1
                s.close()
                continue
            pending[s] = (now, b"")
            sel.register(s, selectors.EVENT_READ)
        for key, _ in sel.select(timeout=0.2):
            s = key.fileobj
            try:
                data = s.recv(256)
            except BlockingIOError:
                continue
            except OSError as e:
                fail(s, errno.errorcode.get(e.errno, str(e.errno)))
                continue
            if not data:
                fail(s, "closed before greeting")
                continue
            buf = pending[s][1] + data
            if b"\n" not in buf:
                pending[s] = (pending[s][0], buf)
                continue
            if not buf.startswith(b"* OK"):
                fail(s, "greeting " + buf.split(b"\r\n")[0][:60].decode("latin-1"))
                continue
            sel.unregister(s)
            del pending[s]
            held.append(s)
        if now - last_sweep > 1:
            last_sweep = now
            for s, (t, _) in list(pending.items()):
                if now - t > 60:
                    fail(s, "no greeting in 60 s")
    took = time.monotonic() - t0
    # A connection the proxy closed after its greeting would show now.
    time.sleep(1.0)
    alive = 0
    for s in held:
        try:
            data = s.recv(1, socket.MSG_PEEK)
            if data:
                alive += 1  # more bytes than the greeting: still open
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    print("imap-clients: %d greeted in %.1f s, %d still open, failed: %s"
          % (len(held), took, alive, failed or "none"), file=sys.stderr)
    tmp = ready_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d %d %d\n" % (alive, len(held), sum(failed.values())))
    os.rename(tmp, ready_file)
    end = time.monotonic() + hold
    while not stop and time.monotonic() < end:
        time.sleep(0.2)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "silent-server":
        silent_server(args[0], int(args[1]))
    elif cmd == "idle-clients":
        idle_clients(args[0], int(args[1]), int(args[2]), args[3], float(args[4]))
    elif cmd == "listener":
        listener(args[0], int(args[1]))
    elif cmd == "imap-server":
        imap_server(args[0], int(args[1]))
    elif cmd == "imap-clients":
        imap_clients(args[0], int(args[1]), int(args[2]), args[3], args[4], float(args[5]),
                     float(args[6]) if len(args) > 6 else 300.0)
    else:
        sys.exit("unknown command " + cmd)
