// A Go HTTP server for bindonce: serve the listener passed at fd 3, drain on SIGTERM.
// Standard library only, so that it builds offline.
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

func main() {
	if os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) || os.Getenv("LISTEN_FDS") == "" {
		fmt.Fprintln(os.Stderr, "go_server: no socket passed (LISTEN_PID/LISTEN_FDS)")
		os.Exit(1)
	}
	// FileListener dups the fd (and sets O_NONBLOCK on the shared description).
	f := os.NewFile(3, "listen-fd-3")
	ln, err := net.FileListener(f)
	if err != nil {
		fmt.Fprintln(os.Stderr, "go_server:", err)
		os.Exit(1)
	}
	f.Close()

	body := fmt.Sprintf("ok go pid=%d\n", os.Getpid())
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(w, body)
	})}

	// Catch SIGTERM before serving: with the default action it would kill the process
	// with the connections Serve had accepted.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		<-sig
		// Shutdown stops accepting and waits for the requests in progress.
		srv.Shutdown(context.Background())
		close(done)
	}()
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, "go_server:", err)
		os.Exit(1)
	}
	<-done
}
