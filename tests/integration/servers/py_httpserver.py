"""http.server (ThreadingHTTPServer) on the socket at fd 3."""
import http.server
import os
import signal
import socket
import sys
import threading

if os.environ.get("LISTEN_PID") != str(os.getpid()) or int(os.environ.get("LISTEN_FDS", "0")) < 1:
    sys.exit("py_httpserver: no socket passed (LISTEN_PID/LISTEN_FDS)")


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"ok http.server pid={os.getpid()}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


sock = socket.socket(fileno=3)
server = http.server.ThreadingHTTPServer(sock.getsockname()[:2], Handler, bind_and_activate=False)
server.socket.close()
server.socket = sock
sock.setblocking(False)  # see py_socketserver.py
# ThreadingHTTPServer makes daemon threads, which server_close() does not wait for: the
# process would exit in the middle of answering. Non-daemon threads are joined.
server.daemon_threads = False
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
server.serve_forever(poll_interval=0.1)
server.server_close()
