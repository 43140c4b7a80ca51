#!/usr/bin/env python3
"""MPTCP lab peer: the counterpart of testkit/lab/peer.ts for MPTCP sockets.

Node cannot open MPTCP sockets (socket(AF_INET, SOCK_STREAM, IPPROTO_MPTCP=262)
needs the protocol argument libuv never passes), so the MPTCP end-to-end tests
run their applications here. It prints the same JSON lines as peer.ts
(testkit/lab/peer-control.ts PeerEvent): listening/ready, accept, connected,
progress, eof, error (with the errno name as `code`), close. `t` is wall-clock
epoch ms with a sub-ms fraction, like peer.ts.

  mptcp_peer.py server --listen PORT [--report-ms N]          echo server
  mptcp_peer.py client --host H --port P [--bind ADDR] [--interval MS] [--report-ms N]
                                                               interactive client

The client sends 16 bytes every --interval ms and reads the echoes; the server
echoes. Any error (ECONNRESET from an MP_FASTCLOSE, EPIPE) is printed once per
connection, as is EOF; a connection that neither errs nor ends keeps reporting
progress (rx grows only while data flows, which is how a hung session shows).
"""
import argparse
import errno
import json
import select
import socket
import sys
import threading
import time

IPPROTO_MPTCP = getattr(socket, 'IPPROTO_MPTCP', 262)
_lock = threading.Lock()


def emit(**ev):
    ev = {'t': time.time() * 1000.0, **ev}
    with _lock:
        sys.stdout.write(json.dumps(ev) + '\n')
        sys.stdout.flush()


def code_of(err):
    if isinstance(err, OSError) and err.errno is not None:
        return errno.errorcode.get(err.errno, str(err.errno))
    return type(err).__name__


def endpoints(sock):
    local, remote = sock.getsockname(), sock.getpeername()
    return {'local': local[0], 'lport': local[1], 'remote': remote[0], 'rport': remote[1]}


def is_mptcp(sock):
    # SOL_MPTCP (284) / MPTCP_INFO (1) exists only on an MPTCP socket that did not fall back.
    try:
        sock.getsockopt(284, 1, 64)
        return True
    except OSError:
        return False


def serve_conn(conn, cid, report_ms):
    rx = tx = 0
    last = time.monotonic()
    conn.settimeout(0.05)
    try:
        while True:
            try:
                data = conn.recv(65536)
            except socket.timeout:
                data = None
            if data == b'':
                emit(ev='eof', conn=cid, rx=rx, tx=tx)
                break
            if data:
                rx += len(data)
                conn.sendall(data)
                tx += len(data)
            if report_ms and time.monotonic() - last >= report_ms / 1000:
                last = time.monotonic()
                emit(ev='progress', conn=cid, rx=rx, tx=tx)
    except OSError as err:
        emit(ev='error', conn=cid, code=code_of(err), message=str(err), rx=rx, tx=tx)
    finally:
        conn.close()
        emit(ev='close', conn=cid, rx=rx, tx=tx)


def server(args):
    ls = socket.socket(socket.AF_INET6 if ':' in args.bind else socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((args.bind, args.listen))
    ls.listen(64)
    emit(ev='listening', lport=args.listen)
    emit(ev='ready')
    n = 0
    while True:
        conn, _ = ls.accept()
        n += 1
        cid = f'{args.listen}#{n}'
        emit(ev='accept', conn=cid, mode='echo', mptcp=is_mptcp(conn), **endpoints(conn))
        threading.Thread(target=serve_conn, args=(conn, cid, args.report_ms), daemon=True).start()


def client(args):
    family = socket.AF_INET6 if ':' in args.host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM, IPPROTO_MPTCP)
    if args.bind:
        s.bind((args.bind, 0))
    try:
        s.connect((args.host, args.port))
    except OSError as err:
        emit(ev='error', conn='c', code=code_of(err), message=str(err))
        return
    emit(ev='connected', conn='c', mptcp=is_mptcp(s), **endpoints(s))
    rx = tx = 0
    interval = args.interval / 1000
    next_send = time.monotonic()
    last_report = time.monotonic()
    payload = b'0123456789abcdef'
    try:
        while True:
            now = time.monotonic()
            if now >= next_send:
                s.sendall(payload)
                tx += len(payload)
                next_send = now + interval
            r, _, _ = select.select([s], [], [], max(0.0, min(next_send - time.monotonic(), 0.05)))
            if r:
                data = s.recv(65536)
                if data == b'':
                    emit(ev='eof', conn='c', rx=rx, tx=tx)
                    break
                rx += len(data)
            if args.report_ms and time.monotonic() - last_report >= args.report_ms / 1000:
                last_report = time.monotonic()
                emit(ev='progress', conn='c', rx=rx, tx=tx)
    except OSError as err:
        emit(ev='error', conn='c', code=code_of(err), message=str(err), rx=rx, tx=tx)
    finally:
        s.close()
        emit(ev='close', conn='c', rx=rx, tx=tx)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest='cmd', required=True)
    ps = sub.add_parser('server')
    ps.add_argument('--listen', type=int, required=True)
    ps.add_argument('--bind', default='0.0.0.0')
    ps.add_argument('--report-ms', type=int, default=0)
    pc = sub.add_parser('client')
    pc.add_argument('--host', required=True)
    pc.add_argument('--port', type=int, required=True)
    pc.add_argument('--bind', default='')
    pc.add_argument('--interval', type=int, default=20)
    pc.add_argument('--report-ms', type=int, default=50)
    args = p.parse_args()
    try:
        server(args) if args.cmd == 'server' else client(args)
    except KeyboardInterrupt:
        pass


if __name__ == '__main__':
    main()
