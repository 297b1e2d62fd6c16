"""The WSGI app bench.py runs under gunicorn: gunicorn cannot run a C worker, so this
is the closest it gets to build/httpd (one short text answer naming the pid)."""
import os


def app(environ, start_response):
    body = b"hello from pid %d\n" % os.getpid()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
