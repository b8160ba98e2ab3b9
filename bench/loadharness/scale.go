package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// scaleScenarios are header-keyed tables sized for the scale scenario:
// room for two million keys, so a million users fit with no eviction, and
// an expiry longer than any run.
func scaleScenarios() []scenario {
	return []scenario{
		{proxy: "caddy", name: "scale stick_table {header.X-User}", id: byHeader, sticky: true,
			caddyTables: "table users {\n\t\t\ttype string len 32\n\t\t\tsize 2m\n\t\t\texpire 30m\n\t\t}",
			caddyPolicy: "stick_table users {\n\t\t\ton {header.X-User}\n\t\t\tfallback round_robin\n\t\t}"},
	}
}

func haproxyScaleScenarios() []scenario {
	return []scenario{
		{proxy: "haproxy", name: "scale stick on hdr(X-User)", id: byHeader, sticky: true,
			haBackend: "balance roundrobin\n\tstick-table type string len 32 size 2m expire 30m\n\tstick on hdr(X-User)"},
	}
}

// scaleResult is one proxy's scale run: a table filled with distinct
// users through real requests.
type scaleResult struct {
	sc    scenario
	round int
	want  int // users the run was to send
	users int // users sent (fewer than want when the time bound ended the fill)
	// fill throughput: the whole fill, its first tenth and its last tenth
	rps, firstRPS, lastRPS float64
	p50, p99               time.Duration
	failed                 int64
	baseKiB, afterKiB      int64
	perEntryB              float64
	checked                int // users sent again after the fill
	violations             int // of those, answered by another server than the first time
	timedOut               bool
}

// scaleIDFormat names user i; 12 bytes, well within a string len 32 key.
const scaleIDFormat = "user-%07d"

// scale fills a header-keyed table with scaleUsers distinct users, one
// request each, over the harness's keep-alive connections, then sends a
// sample of them again. A baseline of requests over 64 keys comes first,
// as in the memory scenario, so the RSS growth is the table's. The fill
// stops at scaleLimit whatever its count.
func (h *harness) scale(ctx context.Context, sc scenario, round int, bs []*backend) (scaleResult, error) {
	res := scaleResult{sc: sc, round: round, want: h.o.scaleUsers}
	dir, err := h.runDir()
	if err != nil {
		return res, err
	}
	p, err := startProxy(sc, h.caddyBin, h.haproxyBin, dir, bs, false)
	if err != nil {
		return res, err
	}
	defer p.stop()
	g := newGenerator(loadConfig{url: p.url, id: byHeader, concurrency: h.o.concurrency, visit: 1}, newPopulation(0, 0, 0))
	defer g.close()

	base := make([]*user, min(h.o.scaleUsers, 100000))
	for i := range base {
		base[i] = &user{id: fmt.Sprintf("base%02d", i%64)}
	}
	if f := g.sweep(ctx, base); f != 0 {
		return res, fmt.Errorf("scale baseline: %d requests failed", f)
	}
	time.Sleep(h.o.settle)
	if res.baseKiB, err = rssKiB(p.cmd.Process.Pid); err != nil {
		return res, err
	}

	n := h.o.scaleUsers
	servers := make([]string, n) // server of user i; interned backend names
	var next, done atomic.Int64
	var failed atomic.Int64
	latencies := make([][]time.Duration, len(g.workers))
	start := time.Now()
	deadline := start.Add(h.o.scaleLimit)
	// tenths[k]: when k tenths of n had been stored
	step := int64(max(1, n/10))
	tenths := make([]time.Duration, 11)
	var tenthMu sync.Mutex
	var wg sync.WaitGroup
	for wi, w := range g.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, n/len(g.workers)+1)
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n || time.Now().After(deadline) {
					break
				}
				u := &user{id: fmt.Sprintf(scaleIDFormat, i)}
				t0 := time.Now()
				ok := g.do(ctx, w, u)
				lat = append(lat, time.Since(t0))
				if !ok {
					failed.Add(1)
					continue
				}
				servers[i] = u.first
				if d := done.Add(1); d%step == 0 && d/step <= 10 {
					tenthMu.Lock()
					tenths[d/step] = time.Since(start)
					tenthMu.Unlock()
				}
			}
			latencies[wi] = lat
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	res.failed = failed.Load()
	res.users = int(done.Load() + res.failed)
	res.timedOut = res.users < n
	res.rps = float64(done.Load()) / elapsed.Seconds()
	if tenths[1] > 0 {
		res.firstRPS = float64(step) / tenths[1].Seconds()
	}
	if !res.timedOut && tenths[9] > 0 && elapsed > tenths[9] {
		res.lastRPS = float64(done.Load()-9*step) / (elapsed - tenths[9]).Seconds()
	}
	all := slices.Concat(latencies...)
	if len(all) > 0 {
		slices.Sort(all)
		res.p50 = all[len(all)/2]
		res.p99 = all[min(len(all)-1, len(all)*99/100)]
	}
	time.Sleep(h.o.settle)
	if res.afterKiB, err = rssKiB(p.cmd.Process.Pid); err != nil {
		return res, err
	}
	if stored := done.Load(); stored > 0 {
		res.perEntryB = float64(res.afterKiB-res.baseKiB) * 1024 / float64(stored)
	}

	// Send a spread-out sample of the stored users again: each must be
	// answered by the server it got the first time, which shows the table
	// kept every one of them at this size.
	every := max(1, res.users/scaleCheckUsers)
	var again []*user
	var want []string
	for i := 0; i < res.users; i += every {
		if servers[i] == "" {
			continue
		}
		again = append(again, &user{id: fmt.Sprintf(scaleIDFormat, i)})
		want = append(want, servers[i])
	}
	if f := g.sweep(ctx, again); f != 0 {
		return res, fmt.Errorf("scale check: %d requests failed", f)
	}
	res.checked = len(again)
	for i, u := range again {
		if u.first != want[i] {
			res.violations++
		}
	}
	return res, ctx.Err()
}

// scaleCheckUsers is about how many users the scale scenario sends again.
const scaleCheckUsers = 20000
