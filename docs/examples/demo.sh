#!/bin/sh
# demo.sh BINDONCE HTTPD: what `make demo` runs.
# Runs 4 copies of the example worker behind one socket on 127.0.0.1:$PORT (default 8080).
set -eu

usage="usage: [PORT=8080] $0 path/to/bindonce path/to/httpd"
bindonce=${1:?$usage}
httpd=${2:?$usage}
port=${PORT:-8080}

for f in "$bindonce" "$httpd"; do
        if [ ! -x "$f" ]; then
                echo "demo.sh: $f is not built yet; run 'make' first" >&2
                exit 1
        fi
done

# exec below keeps this shell's pid, so $$ is the pid bindonce will have.
cat <<EOF
bindonce demo
  bindonce binds 127.0.0.1:$port once, then runs 4 workers ($httpd) that all
  accept on that one socket. A worker that dies is restarted; the socket stays
  open in bindonce meanwhile, so new connections wait in its backlog instead of
  being refused.

In another terminal, try:
  # 200 requests, spread over the workers
  for i in \$(seq 200); do curl -s 127.0.0.1:$port; done | sort | uniq -c
  # the workers' pids; kill one, and run the loop again
  pgrep -P $$
  kill -9 <one of those pids>
  # replace every worker, one at a time
  kill -HUP $$

Stop with Ctrl-C, or: kill $$
Another port: PORT=8081 make demo

EOF
exec "$bindonce" -l "127.0.0.1:$port" -w 4 -- "$httpd"
