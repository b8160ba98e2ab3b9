// Package redistest starts real redis-server processes for tests, on free
// loopback ports. A missing redis-server fails the test under CI=true and
// skips it elsewhere, saying how to install it.
package redistest

import (
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Server is a redis-server process a test started; it is killed when the
// test ends, and its output is printed if the test failed.
type Server struct {
	t    testing.TB
	bin  string
	args []string
	port int
	tls  bool
	log  *os.File
	mu   sync.Mutex
	cmd  *exec.Cmd
}

// Binary finds redis-server in PATH.
func Binary(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("redis-server not found in PATH (CI=true): install it with: apt-get install -y redis-server")
		}
		t.Skip("redis-server not found in PATH; install it with: apt-get install -y redis-server")
	}
	return bin
}

// FreePort returns a TCP port free on 127.0.0.1 at the time of the call.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Start starts a plain-text server; extra arguments are appended to its
// command line (e.g. "--requirepass", "x").
func Start(t testing.TB, extra ...string) *Server {
	t.Helper()
	port := FreePort(t)
	return Launch(t, port, false, append([]string{"--port", strconv.Itoa(port)}, extra...))
}

// Launch starts a server that listens on port with the given arguments
// (which must make it listen there: --port, or --port 0 --tls-port for
// TLS, which tls says).
func Launch(t testing.TB, port int, tls bool, args []string) *Server {
	t.Helper()
	base := []string{"--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", t.TempDir(), "--daemonize", "no", "--loglevel", "warning", "--protected-mode", "no"}
	r := &Server{t: t, bin: Binary(t), args: append(base, args...), port: port, tls: tls}
	r.start()
	t.Cleanup(r.Kill)
	return r
}

func (r *Server) start() {
	r.t.Helper()
	cmd := exec.Command(r.bin, r.args...)
	if r.log == nil {
		f, err := os.CreateTemp(r.t.TempDir(), "redis-*.log")
		if err != nil {
			r.t.Fatal(err)
		}
		r.log = f
		r.t.Cleanup(func() {
			if r.t.Failed() {
				if b, err := os.ReadFile(f.Name()); err == nil && len(b) > 0 {
					r.t.Logf("redis-server output:\n%s", b)
				}
			}
			f.Close()
		})
	}
	cmd.Stdout, cmd.Stderr = r.log, r.log
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("starting redis-server: %v", err)
	}
	r.mu.Lock()
	r.cmd = cmd
	r.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", r.HostPort(), 100*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("redis-server did not listen on %s: %v", r.HostPort(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// HostPort is 127.0.0.1:<port>.
func (r *Server) HostPort() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)) }

// URL is redis://127.0.0.1:<port>, or rediss:// for a TLS server.
func (r *Server) URL() string {
	if r.tls {
		return "rediss://" + r.HostPort()
	}
	return "redis://" + r.HostPort()
}

func (r *Server) signal(sig syscall.Signal) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil && r.cmd.Process != nil {
		_ = r.cmd.Process.Signal(sig)
	}
}

// Pause freezes the process (SIGSTOP): its sockets stay open and the
// kernel keeps accepting connections, but nothing answers.
func (r *Server) Pause() { r.signal(syscall.SIGSTOP) }

// Resume continues a paused process (SIGCONT).
func (r *Server) Resume() { r.signal(syscall.SIGCONT) }

// Kill ends the process; its port refuses connections.
func (r *Server) Kill() {
	r.mu.Lock()
	cmd := r.cmd
	r.cmd = nil
	r.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGCONT)
	_ = cmd.Process.Kill()
	_, _ = cmd.Process.Wait()
}

// Restart starts the server again on the same port, empty.
func (r *Server) Restart() {
	r.Kill()
	r.start()
}
