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
            await reader.readline()
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
    server.close()                      # stop accepting
    # Finish what was accepted: a connection accepted a moment ago is still a task that
    # has not reached handle(), so wait for every task, not only the handlers.
    while tasks := asyncio.all_tasks() - {asyncio.current_task()}:
        await asyncio.wait(tasks)


asyncio.run(main())
