package sticktable

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a hand-moved clock for expiry tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// newTestTable builds a table on a fake clock with no background reaper
// and one shard (exact LRU order) unless opts says otherwise, and checks
// the internal invariants when the test ends.
func newTestTable(tb testing.TB, cfg Config, opts Options) (*Table, *fakeClock) {
	tb.Helper()
	clk := newFakeClock()
	if opts.Now == nil {
		opts.Now = clk.Now
	}
	if opts.ReapInterval == 0 {
		opts.ReapInterval = -1
	}
	if opts.Shards == 0 {
		opts.Shards = 1
	}
	t, err := NewWithOptions(cfg, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		t.Close()
		if err := t.check(); err != nil {
			tb.Errorf("invariants: %v", err)
		}
	})
	return t, clk
}

func mustStore(tb testing.TB, t *Table, key, server string) Entry {
	tb.Helper()
	e, err := t.Store(key, server)
	if err != nil {
		tb.Fatalf("Store(%q, %q): %v", key, server, err)
	}
	return e
}

func mustCheck(tb testing.TB, t *Table) {
	tb.Helper()
	if err := t.check(); err != nil {
		tb.Fatal(err)
	}
}

// server returns the server key is stuck to, "" if none, without refreshing.
func server(t *Table, key string) string {
	e, ok := t.Get(key)
	if !ok {
		return ""
	}
	return e.Server
}

// dump renders a table's replicable state canonically, for comparing
// tables that should have converged.
func dump(t *Table) string {
	var lines []string
	t.RangeChanges(func(c Change) bool {
		lines = append(lines, fmt.Sprintf("%v %v %q %q %d %d %v", c.Op, c.Key, c.Server, c.Node, c.Version, c.Origin, c.TTL))
		return true
	})
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

type changeLog struct {
	mu  sync.Mutex
	chs []Change
}

func (l *changeLog) add(c Change) {
	l.mu.Lock()
	l.chs = append(l.chs, c)
	l.mu.Unlock()
}

func (l *changeLog) take() []Change {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.chs
	l.chs = nil
	return out
}
