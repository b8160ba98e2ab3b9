package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// backend is one application server on 127.0.0.1. It runs in the harness
// process: it does almost no work per request, so it costs the measured
// proxy little CPU, and killing it is a method call rather than a signal
// to a child process the harness would have to reap.
type backend struct {
	name string
	addr string

	srv      *http.Server // HTTP backends
	ln       net.Listener // TCP backends
	hits     atomic.Int64
	stopOnce sync.Once
}

// body is what every backend answers: small, like an API response, so the
// measurement is dominated by the proxy's per-request work, not by copying.
var body = []byte(`{"ok":true,"items":[1,2,3,4,5,6,7,8,9,10],"note":"load harness"}` + "\n")

func startBackend(name string) (*backend, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b := &backend{name: name, addr: ln.Addr().String()}
	b.srv = &http.Server{
		Handler:           http.HandlerFunc(b.serve),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	go func() { _ = b.srv.Serve(ln) }()
	return b, nil
}

func (b *backend) serve(w http.ResponseWriter, r *http.Request) {
	b.hits.Add(1)
	// Drain any request body so the proxy's connection stays reusable.
	_, _ = io.Copy(io.Discard, r.Body)
	h := w.Header()
	// X-Backend is how the load generator learns which server answered:
	// it survives every proxy untouched, unlike the body or a cookie.
	h["X-Backend"] = []string{b.name}
	h["Content-Type"] = []string{"application/json"}
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	_, _ = w.Write(body)
}

// kill makes the backend disappear as a crashed process would: the
// listener closes (new connections are refused) and open connections are
// cut, including those the proxy keeps alive.
func (b *backend) kill() {
	b.stopOnce.Do(func() {
		if b.srv != nil {
			_ = b.srv.Close()
		}
		if b.ln != nil {
			_ = b.ln.Close()
		}
	})
}

// startTCPBackend starts a TCP server for the layer-4 scenario: it
// answers every connection with its name and a newline and closes it, so
// one connection is one whole exchange (connect, answer, close) and the
// client learns from the line which server the proxy chose.
func startTCPBackend(name string) (*backend, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b := &backend{name: name, addr: ln.Addr().String(), ln: ln}
	line := []byte(name + "\n")
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue // a transient accept error (e.g. too many files): keep serving
			}
			b.hits.Add(1)
			go func() {
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				_, _ = c.Write(line)
				_ = c.Close()
			}()
		}
	}()
	return b, nil
}

// startTCPBackends starts n TCP backends named prefix1..prefixN.
func startTCPBackends(prefix string, n int) ([]*backend, error) {
	bs := make([]*backend, 0, n)
	for i := 1; i <= n; i++ {
		b, err := startTCPBackend(fmt.Sprintf("%s%d", prefix, i))
		if err != nil {
			killAll(bs)
			return nil, err
		}
		bs = append(bs, b)
	}
	return bs, nil
}

// startBackends starts n backends named prefix1..prefixN.
func startBackends(prefix string, n int) ([]*backend, error) {
	bs := make([]*backend, 0, n)
	for i := 1; i <= n; i++ {
		b, err := startBackend(fmt.Sprintf("%s%d", prefix, i))
		if err != nil {
			killAll(bs)
			return nil, err
		}
		bs = append(bs, b)
	}
	return bs, nil
}

func killAll(bs []*backend) {
	for _, b := range bs {
		b.kill()
	}
}
