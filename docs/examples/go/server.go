// SPDX-License-Identifier: MIT
// A Go HTTP server on the socket bindonce hands it (standard library only):
//
//	go build -o server server.go
//	bindonce -l 127.0.0.1:8000 -w 2 --watch server -- ./server
//
// tests/integration/test_real_servers.py builds and runs this very file.
package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
)

// The socket bindonce passed at fd 3, if it was passed to this process (LISTEN_PID), else
// one of our own, so that the server also runs alone.
func listener() (net.Listener, error) {
	if os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) {
		return net.Listen("tcp", "127.0.0.1:8000")
	}
	// FileListener dups the fd; the copy at 3 can go. (It also sets O_NONBLOCK on the
	// open file description, which every worker shares: harmless to Go's other workers.)
	f := os.NewFile(3, "LISTEN_FDS")
	defer f.Close()
	return net.FileListener(f)
}

func main() {
	// Before serving: with SIGTERM's default action, a stop would kill the connections
	// Serve had already accepted.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM)

	l, err := listener()
	if err != nil {
		fmt.Fprintln(os.Stderr, "server:", err)
		os.Exit(1)
	}
	body := fmt.Sprintf("ok go pid=%d\n", os.Getpid())
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(w, body)
	})}
	drained := make(chan struct{})
	go func() {
		// bindonce stops a worker with SIGTERM: stop accepting, finish what was accepted.
		<-stop
		srv.Shutdown(context.Background())
		close(drained)
	}()
	if err := srv.Serve(l); err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, "server:", err)
		os.Exit(1)
	}
	// Serve returns as soon as Shutdown begins; the requests in progress end here.
	<-drained
}
