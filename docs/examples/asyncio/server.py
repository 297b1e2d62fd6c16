#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""An asyncio HTTP server on the socket bindonce hands it.

    bindonce -l 127.0.0.1:8000 -w 2 --watch . -- python3 server.py
"""
import asyncio
import os
import socket

MESSAGE = b"hello from the asyncio example\n"


async def handle(reader, writer):
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(MESSAGE), MESSAGE))
    await writer.drain()
    writer.close()


async def main():
    if os.environ.get("LISTEN_PID") == str(os.getpid()):
        sock = socket.socket(fileno=3)      # asyncio sets it non-blocking itself
        server = await asyncio.start_server(handle, sock=sock)
    else:
        server = await asyncio.start_server(handle, "127.0.0.1", 8000)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
