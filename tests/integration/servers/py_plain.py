"""The plainest server: a blocking accept() loop on the socket at fd 3 (the server of the
2009 "Address already in use" thread). It relies on the socket being passed blocking, as
systemd passes it: on an O_NONBLOCK socket accept() raises BlockingIOError at once."""
import os
import signal
import socket
import sys

if os.environ.get("LISTEN_PID") != str(os.getpid()) or int(os.environ.get("LISTEN_FDS", "0")) < 1:
    sys.exit("py_plain: no socket passed (LISTEN_PID/LISTEN_FDS)")

listener = socket.socket(fileno=3)


def on_term(signo, frame):
    # Close our descriptor of the listening socket (bindonce and the other workers keep
    # theirs): an accept() in progress then fails, and a connection accepted a moment ago
    # is still answered. Raising here instead could drop that connection.
    listener.close()


signal.signal(signal.SIGTERM, on_term)
body = f"ok plain pid={os.getpid()}\n".encode()
while True:
    try:
        conn, _ = listener.accept()
    except OSError:
        if listener.fileno() == -1:
            break                       # closed by on_term: done
        raise
    with conn:
        conn.recv(65536)
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
