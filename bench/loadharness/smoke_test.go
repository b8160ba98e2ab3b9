package main

import (
	"context"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestSmoke runs the whole harness in smoke mode: Caddy built from the
// checkout, every Caddy scenario at 3 upstreams for well under a second
// each (HTTP, the store-backed table when redis-server is installed, and
// layer 4), the failover, memory and scale scenarios with small
// populations, no HAProxy. The figures are meaningless at this size; what it checks is
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
	_, redisErr := exec.LookPath("redis-server")
	if redisErr == nil {
		want++ // the store scenario, on the harness's own redis-server
	} else {
		t.Log("store scenario not covered: no redis-server on PATH (Debian: apt-get install -y redis-server)")
	}
	stored := 0
	for _, r := range rep.runs {
		if r.sc.store {
			stored++
		}
	}
	if stored != 0 != (redisErr == nil) {
		t.Errorf("%d store scenario runs with redis-server present=%v (%s)", stored, redisErr == nil, rep.storeNote)
	}
	if len(rep.runs) != want {
		t.Errorf("%d configurations measured, want %d", len(rep.runs), want)
	}
	if len(rep.l4runs) != len(layer4Scenarios()) {
		t.Errorf("%d layer-4 configurations measured, want %d", len(rep.l4runs), len(layer4Scenarios()))
	}
	for _, r := range append(slices.Clone(rep.runs), rep.l4runs...) {
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
	if len(rep.scales) != 1 {
		t.Errorf("%d scale runs, want 1 (Caddy's)", len(rep.scales))
	}
	o := smokeOptions()
	for _, s := range rep.scales {
		name := s.sc.proxy + " " + s.sc.name
		if s.users != o.scaleUsers || s.timedOut {
			t.Errorf("%s: %d of %d users sent (time bound hit: %v)", name, s.users, o.scaleUsers, s.timedOut)
		}
		if s.failed != 0 {
			t.Errorf("%s: %d requests failed", name, s.failed)
		}
		if s.rps <= 0 || s.firstRPS <= 0 || s.lastRPS <= 0 {
			t.Errorf("%s: fill rates %.0f, first tenth %.0f, last tenth %.0f req/s, want all > 0", name, s.rps, s.firstRPS, s.lastRPS)
		}
		// the sample spans the whole fill, and every one kept its server
		if s.checked < scaleCheckUsers/2 && s.checked < o.scaleUsers/2 {
			t.Errorf("%s: only %d users checked again", name, s.checked)
		}
		if s.violations != 0 {
			t.Errorf("%s: %d of %d users checked again changed server", name, s.violations, s.checked)
		}
		if s.afterKiB <= 0 || s.baseKiB <= 0 {
			t.Errorf("%s: RSS readings %d and %d KiB", name, s.baseKiB, s.afterKiB)
		}
	}
	md := rep.markdown()
	for _, section := range []string{"### Throughput", "### Layer 4", "### Failover", "### Memory", "### Scale", "### Targets"} {
		if !strings.Contains(md, section) {
			t.Errorf("report has no %q section", section)
		}
	}
}
