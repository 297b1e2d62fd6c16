"""asyncio on the socket at fd 3: asyncio.start_server(sock=...)."""
import asyncio
import os
import signal
import socket
import sys

if os.environ.get("LISTEN_PID") != str(os.getpid()) or int(os.environ.get("LISTEN_FDS", "0")) < 1:
    sys.exit("py_asyncio: no socket passed (LISTEN_PID/LISTEN_FDS)")


async def main():
    body = f"ok asyncio pid={os.getpid()}\n".encode()

    async def handle(reader, writer):
        try:
            await reader.readuntil(b"\r\n\r\n")    # the whole request head
            writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
        finally:
            writer.close()

    # The handler first: a SIGTERM that finds the default action once accepting has
    # begun would kill the process with the connections it accepted.
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    server = await asyncio.start_server(handle, sock=socket.socket(fileno=3))
    await stop.wait()
    # Stop accepting, but close the server only once everything accepted is answered:
    # connections accepted in the loop's last pass are tasks that have not attached to
    # the server yet, and in Python 3.11 one that attaches after Server.close() fails an
    # assertion in Server._attach(), silently, and is reset (a reload lost requests so).
    loop = asyncio.get_running_loop()
    for sock in server.sockets:
        loop.remove_reader(sock.fileno())
    while tasks := asyncio.all_tasks() - {asyncio.current_task()}:
        await asyncio.wait(tasks)
    server.close()


asyncio.run(main())
