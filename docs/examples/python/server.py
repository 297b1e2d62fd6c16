#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The server of the 2009 python-list thread, taking its socket from bindonce.

    bindonce -l 127.0.0.1:8000 --watch . -- python3 server.py

Edit MESSAGE and save: the next answers come from the new code, and no connection is
refused or lost in between. A save with a syntax error leaves the old code serving.
"""
import os
import signal
import socket

MESSAGE = b"hello from the python example\n"


def listening_socket():
    # The socket-activation protocol: our sockets start at fd 3, and LISTEN_PID names us
    # (a wrapper in between, like `sh -c` without exec, must not take them by mistake).
    if os.environ.get("LISTEN_PID") == str(os.getpid()) and int(os.environ.get("LISTEN_FDS", "0")) >= 1:
        return socket.socket(fileno=3)
    return socket.create_server(("127.0.0.1", 8000))   # run alone, without bindonce


def main():
    server = listening_socket()

    # bindonce replaces a worker with SIGTERM. Closing our descriptor of the socket (the
    # supervisor keeps its own, so the port stays open) ends the accept() below; the
    # request in hand is still answered. Python's default, dying at once, would drop it.
    signal.signal(signal.SIGTERM, lambda signo, frame: server.close())
    while True:
        try:
            conn, _ = server.accept()       # blocking, as systemd passes the socket
        except OSError:
            if server.fileno() == -1:
                return                      # SIGTERM: done
            raise
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(MESSAGE), MESSAGE))


if __name__ == "__main__":
    main()
