// SPDX-License-Identifier: MIT
// A Go HTTP server on the socket bindonce hands it:
//
//	go build -o server server.go
//	bindonce -l 127.0.0.1:8000 -w 2 --watch server -- ./server
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

const message = "hello from the go example\n"

func listener() (net.Listener, error) {
	if os.Getenv("LISTEN_PID") == strconv.Itoa(os.Getpid()) {
		return net.FileListener(os.NewFile(3, "bindonce"))
	}
	return net.Listen("tcp", "127.0.0.1:8000")
}

func main() {
	l, err := listener()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, message)
	})}
	go func() {
		// bindonce stops a worker with SIGTERM: finish what was accepted, then exit.
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, syscall.SIGTERM)
		<-stop
		srv.Shutdown(context.Background())
	}()
	if err := srv.Serve(l); err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
