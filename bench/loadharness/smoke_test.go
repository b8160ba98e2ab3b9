package main

import (
	"context"
	"os/exec"
	"testing"
	"time"
)

// TestSmoke runs the whole harness in smoke mode: Caddy built from the
// checkout, every Caddy scenario at 3 upstreams for well under a second
// each, the failover and memory scenarios with small populations, no
// HAProxy. The figures are meaningless at this size; what it checks is
// that the machinery measures what it claims to: requests flow through
// every configuration, sticky configurations keep every user on one
// server, a killed backend moves exactly its own users, and the memory
// scenario sees the table grow.
func TestSmoke(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("needs the go command to build Caddy")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := run(ctx, smokeOptions(), t.Logf)
	if err != nil {
		t.Fatal(err)
	}

	want := len(caddyScenarios())
	if len(rep.runs) != want {
		t.Errorf("%d configurations measured, want %d", len(rep.runs), want)
	}
	for _, r := range rep.runs {
		name := r.sc.proxy + " " + r.sc.name
		if r.stats.requests == 0 {
			t.Errorf("%s served no requests", name)
		}
		if r.stats.failed != 0 {
			t.Errorf("%s: %d requests failed", name, r.stats.failed)
		}
		if r.stats.tracked == 0 {
			t.Errorf("%s: no user was answered", name)
		}
		if r.sc.sticky && r.stats.switched != 0 {
			t.Errorf("%s: %d of %d users saw two servers", name, r.stats.switched, r.stats.tracked)
		}
		// round_robin must spread users, or a broken X-Backend reading
		// would let every sticky check pass vacuously.
		if !r.sc.sticky && r.stats.switched == 0 {
			t.Errorf("%s: no user saw two servers; is the generator reading X-Backend?", name)
		}
	}

	if len(rep.fails) == 0 {
		t.Error("no failover scenario ran")
	}
	for _, f := range rep.fails {
		name := f.sc.proxy + " " + f.sc.name
		if f.onDead == 0 {
			t.Errorf("%s: no user was on the killed backend", name)
		}
		if f.stats.moved != f.onDead {
			t.Errorf("%s: %d users moved, the killed backend had %d", name, f.stats.moved, f.onDead)
		}
		if f.stats.violators != 0 {
			t.Errorf("%s: %d users changed server other than off the killed one", name, f.stats.violators)
		}
		t.Logf("%s: %d failed requests after the kill", name, f.stats.failed+f.sweepFailed)
	}

	if len(rep.mems) == 0 {
		t.Error("no memory scenario ran")
	}
	for _, m := range rep.mems {
		if m.perEntryB <= 0 {
			t.Errorf("%s %s: RSS grew %d -> %d KiB for %d keys: %.0f B per entry, want > 0",
				m.proxy, m.table, m.baseKiB, m.afterKiB, m.keys, m.perEntryB)
		}
	}
	if md := rep.markdown(); len(md) == 0 {
		t.Error("empty report")
	}
}
