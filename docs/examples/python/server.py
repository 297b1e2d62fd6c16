#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The server of the 2009 python-list thread, taking its socket from bindonce.

    bindonce -l 127.0.0.1:8000 -w 2 --watch . -- python3 server.py

Edit MESSAGE and save: the next answers come from the new code, and no connection is
refused in between. A save with a syntax error leaves the old code serving.
"""
import os
import socket

MESSAGE = b"hello from the python example\n"


def listening_socket():
    # The socket-activation protocol: our sockets start at fd 3, and LISTEN_PID names us
    # (a wrapper in between, like `sh -c` without exec, must not take them by mistake).
    if os.environ.get("LISTEN_PID") == str(os.getpid()) and int(os.environ.get("LISTEN_FDS", "0")) >= 1:
        return socket.socket(fileno=3)
    s = socket.create_server(("127.0.0.1", 8000))    # run alone, without bindonce
    return s


def main():
    server = listening_socket()
    while True:
        conn, _ = server.accept()           # blocking, as systemd passes the socket
        with conn:
            conn.recv(65536)
            body = MESSAGE
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


if __name__ == "__main__":
    main()
