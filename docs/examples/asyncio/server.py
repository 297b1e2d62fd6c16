#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""An asyncio HTTP server on the socket bindonce hands it.

    bindonce -l 127.0.0.1:8000 --watch . -- python3 server.py
"""
import asyncio
import os
import signal
import socket

MESSAGE = b"hello from the asyncio example\n"


async def handle(reader, writer):
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(MESSAGE), MESSAGE))
        await writer.drain()
    finally:
        writer.close()


async def main():
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    # Before accepting: bindonce replaces a worker with SIGTERM, which must not kill it
    # with connections in hand.
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    if os.environ.get("LISTEN_PID") == str(os.getpid()):
        server = await asyncio.start_server(handle, sock=socket.socket(fileno=3))
    else:
        server = await asyncio.start_server(handle, "127.0.0.1", 8000)
    await stop.wait()
    # Stop accepting, answer what was accepted, then close (Server.close() first would
    # reset connections accepted in the loop's last pass).
    for sock in server.sockets:
        loop.remove_reader(sock.fileno())
    while tasks := asyncio.all_tasks() - {asyncio.current_task()}:
        await asyncio.wait(tasks)
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
