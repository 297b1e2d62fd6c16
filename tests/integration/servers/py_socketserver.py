"""socketserver on the socket at fd 3: keep the bound socket instead of binding one."""
import os
import signal
import socket
import socketserver
import sys
import threading

if os.environ.get("LISTEN_PID") != str(os.getpid()) or int(os.environ.get("LISTEN_FDS", "0")) < 1:
    sys.exit("py_socketserver: no socket passed (LISTEN_PID/LISTEN_FDS)")


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        self.rfile.readline()
        body = f"ok socketserver pid={os.getpid()}\n".encode()
        self.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


server = socketserver.TCPServer(None, Handler, bind_and_activate=False)
server.socket.close()
server.socket = socket.socket(fileno=3)
server.server_address = server.socket.getsockname()
# serve_forever() waits in select(), then accept()s: with several workers on one socket,
# all wake and one wins; on a blocking socket the others would sit in accept() (and miss
# shutdown()). Non-blocking, they go back to select(). The flag is shared by all workers.
server.socket.setblocking(False)
# shutdown() waits for serve_forever() to return: ask for it from another thread.
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
server.serve_forever(poll_interval=0.1)
server.server_close()
