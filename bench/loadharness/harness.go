package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"time"
)

// options are the knobs of one harness run; flags fill them in main and
// the smoke test fills them directly.
type options struct {
	duration    time.Duration // measured time per configuration and round
	warmup      time.Duration // load before measuring, discarded
	slice       time.Duration // measured periods alternate between configurations in slices this long
	rounds      int
	upstreams   []int
	concurrency int           // connections, each a worker sending back to back
	users       int           // users present when a configuration starts
	arrival     float64       // new users per second after that
	maxUsers    int           // bound on the population
	visit       int           // requests a user sends each time it is picked
	failUsers   int           // population of the failover scenario
	memKeys     int           // distinct keys stored by the memory scenario
	scaleUsers  int           // distinct users the scale scenario sends, one request each
	scaleLimit  time.Duration // bound on the scale scenario's fill, whatever its count
	scaleRounds int           // rounds of the scale scenario (each a fresh proxy per configuration)
	layer4      bool          // run the layer-4 configurations
	settle      time.Duration
	haproxy     string // auto | on | off
	caddyBin    string // prebuilt binary; empty: build from the checkout
	out         string
	smoke       bool
	command     string         // how the run was started, for the report
	only        *regexp.Regexp // keep scenarios whose "proxy/name" matches
}

// smokeOptions shrink everything so the whole harness runs in a few
// seconds per configuration: it proves the machinery, not the numbers.
func smokeOptions() options {
	return options{
		duration:    600 * time.Millisecond,
		warmup:      200 * time.Millisecond,
		slice:       300 * time.Millisecond,
		rounds:      1,
		upstreams:   []int{3},
		concurrency: 8,
		users:       40,
		arrival:     50,
		maxUsers:    1000,
		visit:       3,
		failUsers:   60,
		memKeys:     20000,
		scaleUsers:  5000,
		scaleLimit:  20 * time.Second,
		scaleRounds: 1,
		layer4:      true,
		settle:      300 * time.Millisecond,
		haproxy:     "off",
		smoke:       true,
	}
}

// runResult is one configuration measured in one round.
type runResult struct {
	sc        scenario
	upstreams int
	round     int
	stats     loadStats
}

// failResult is the failover scenario for one configuration.
type failResult struct {
	sc          scenario
	killed      string
	users       int
	onDead      int
	stats       loadStats
	sweepFailed int64
}

// memResult is the memory scenario for one proxy.
type memResult struct {
	proxy     string
	table     string
	keys      int
	baseKiB   int64
	afterKiB  int64
	perEntryB float64
}

// report is everything a run measured.
type report struct {
	opts           options
	started        time.Time
	elapsed        time.Duration
	caddyVersion   string
	haproxyVersion string
	runs           []runResult
	l4runs         []runResult
	fails          []failResult
	mems           []memResult
	scales         []scaleResult
	storeNote      string // how the store scenario was set up, or why it did not run
}

type harness struct {
	o          options
	tmp        string
	caddyBin   string
	haproxyBin string
	logf       func(string, ...any)
}

// run executes every scenario and returns the measurements.
func run(ctx context.Context, o options, logf func(string, ...any)) (*report, error) {
	rep := &report{opts: o, started: time.Now().UTC()}
	tmp, err := os.MkdirTemp("", "loadharness-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	h := &harness{o: o, tmp: tmp, caddyBin: o.caddyBin, logf: logf}

	if h.caddyBin == "" {
		root, err := repoRoot()
		if err != nil {
			return nil, err
		}
		h.caddyBin = filepath.Join(tmp, "caddy")
		logf("building Caddy with the plugin (go build ./cmd/caddy)")
		if err := buildCaddy(ctx, root, h.caddyBin); err != nil {
			return nil, err
		}
	}
	if v, err := exec.Command(h.caddyBin, "version").Output(); err == nil {
		rep.caddyVersion = strings.Fields(string(v) + " ?")[0]
	}
	switch o.haproxy {
	case "off":
	default:
		if p, err := exec.LookPath("haproxy"); err == nil {
			h.haproxyBin = p
			if v, err := exec.Command(p, "-v").Output(); err == nil {
				rep.haproxyVersion = strings.TrimSpace(strings.SplitN(string(v), "\n", 2)[0])
			}
		} else if o.haproxy == "on" {
			return nil, fmt.Errorf("-haproxy on, but no haproxy on PATH")
		}
	}
	if o.smoke && storeURL == "" {
		// The smoke run covers the store scenario when it can start a
		// redis-server of its own; it never needs one.
		url, stopRedis, err := startRedis(tmp)
		switch {
		case err != nil:
			rep.storeNote = "store scenario skipped: " + err.Error()
			logf("%s", rep.storeNote)
		default:
			defer stopRedis()
			storeURL = url
			defer func() { storeURL = "" }()
			rep.storeNote = "store scenario on a redis-server the harness started"
		}
	}
	scenarios := caddyScenarios()
	l4 := []scenario(nil)
	if o.layer4 {
		l4 = layer4Scenarios()
	}
	scales := []scenario(nil)
	if o.scaleUsers > 0 {
		scales = scaleScenarios()
	}
	if h.haproxyBin != "" {
		scenarios = append(scenarios, haproxyScenarios()...)
		if o.layer4 {
			l4 = append(l4, haproxyLayer4Scenarios()...)
		}
		if o.scaleUsers > 0 {
			scales = append(scales, haproxyScaleScenarios()...)
		}
	} else {
		logf("no haproxy on PATH (or -haproxy off): Caddy only")
	}

	if o.only != nil {
		scenarios = onlyMatching(o.only, scenarios)
		l4 = onlyMatching(o.only, l4)
		scales = slices.DeleteFunc(scales, func(sc scenario) bool { return !o.only.MatchString(sc.proxy + "/" + sc.name) })
	}

	maxN := 0
	for _, n := range o.upstreams {
		maxN = max(maxN, n)
	}
	bs, err := startBackends("b", maxN)
	if err != nil {
		return nil, err
	}
	defer killAll(bs)
	var tcpBs []*backend
	if len(l4) > 0 {
		if tcpBs, err = startTCPBackends("t", maxN); err != nil {
			return nil, err
		}
		defer killAll(tcpBs)
	}

	// One round measures every configuration once. Configurations are
	// grouped by proxy and upstream count, round_robin among them. A
	// group's proxies all run at once (idle ones cost nothing) and the
	// measured time is cut into slices that alternate between them, so
	// every configuration of a group samples the same minutes of the
	// machine: drift from other tenants lands on all of them alike and
	// cancels out of the ratios. The order rotates from round to round,
	// across groups and within them, and from slice to slice.
	// Layer-4 groups are separate from HTTP ones: their configurations
	// are compared with their own round_robin.
	type group struct {
		n   int
		scs []scenario
	}
	var groups []group
	for _, list := range [][]scenario{scenarios, l4} {
		for _, n := range o.upstreams {
			for _, proxy := range []string{"caddy", "haproxy"} {
				g := group{n: n}
				for _, sc := range list {
					if sc.proxy == proxy {
						g.scs = append(g.scs, sc)
					}
				}
				if len(g.scs) > 0 {
					groups = append(groups, g)
				}
			}
		}
	}
	for r := 0; r < o.rounds && len(groups) > 0; r++ {
		for gi := range groups {
			g := groups[(gi+r)%len(groups)]
			scs := append(slices.Clone(g.scs[r%len(g.scs):]), g.scs[:r%len(g.scs)]...)
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			backends, unit := bs[:g.n], "req/s"
			if scs[0].layer4 {
				backends, unit = tcpBs[:g.n], "conn/s"
			}
			sts, err := h.measureGroup(ctx, scs, backends)
			if err != nil {
				return nil, err
			}
			for i, sc := range scs {
				st := sts[i]
				logf("round %d/%d  %-7s %-32s %2d upstreams  %8.0f %s  p50 %v  p99 %v  switched %d/%d  failed %d",
					r+1, o.rounds, sc.proxy, sc.name, g.n, st.rps, unit, st.p50.Round(time.Microsecond), st.p99.Round(time.Microsecond), st.switched, st.tracked, st.failed)
				res := runResult{sc: sc, upstreams: g.n, round: r, stats: st}
				if sc.layer4 {
					rep.l4runs = append(rep.l4runs, res)
				} else {
					rep.runs = append(rep.runs, res)
				}
			}
		}
	}

	for _, sc := range scenarios {
		if sc.id != byCookie && sc.id != byHeader {
			continue
		}
		fr, err := h.failover(ctx, sc)
		if err != nil {
			return nil, err
		}
		logf("failover %-7s %-32s users %d, on %s %d, moved %d, other changes %d, failed %d",
			sc.proxy, sc.name, fr.users, fr.killed, fr.onDead, fr.stats.moved, fr.stats.violators, fr.stats.failed+fr.sweepFailed)
		rep.fails = append(rep.fails, fr)
	}

	for _, sc := range scenarios {
		if sc.id != byHeader {
			continue
		}
		if o.smoke && sc.store {
			// the smoke run's 30 s budget: the store's table is measured
			// for throughput and failover there, memory in full runs only
			continue
		}
		mr, err := h.memory(ctx, sc, bs[:min(3, len(bs))])
		if err != nil {
			return nil, err
		}
		logf("memory   %-7s %-32s %d keys: RSS %d -> %d KiB, %.0f B/entry", sc.proxy, sc.name, mr.keys, mr.baseKiB, mr.afterKiB, mr.perEntryB)
		rep.mems = append(rep.mems, mr)
	}

	// Scale: each round starts a fresh proxy per configuration, in
	// alternating order, on 3 backends.
	for r := 0; r < o.scaleRounds && len(scales) > 0; r++ {
		for i := range scales {
			sc := scales[(i+r)%len(scales)]
			sr, err := h.scale(ctx, sc, r, bs[:min(3, len(bs))])
			if err != nil {
				return nil, fmt.Errorf("scale %s %s: %v", sc.proxy, sc.name, err)
			}
			logf("scale %d/%d %-7s %-32s %d users in %s: %.0f req/s (first tenth %.0f, last tenth %.0f), p99 %v, RSS %d -> %d KiB, %.0f B/entry, %d/%d checked users moved, %d failed",
				r+1, o.scaleRounds, sc.proxy, sc.name, sr.users, time.Duration(float64(sr.users)/max(sr.rps, 1)*float64(time.Second)).Round(time.Second),
				sr.rps, sr.firstRPS, sr.lastRPS, sr.p99.Round(time.Microsecond), sr.baseKiB, sr.afterKiB, sr.perEntryB, sr.violations, sr.checked, sr.failed)
			rep.scales = append(rep.scales, sr)
		}
	}
	rep.elapsed = time.Since(rep.started)
	return rep, nil
}

// runDir gives each proxy start a fresh directory for its config and
// storage, so no state carries from one configuration to the next.
func (h *harness) runDir() (string, error) {
	return os.MkdirTemp(h.tmp, "run-")
}

// measureGroup starts one proxy per configuration, warms each up, then
// loads them in turn, one slice at a time, until each has had the
// measured duration; it stops them all and returns their stats in order.
func (h *harness) measureGroup(ctx context.Context, scs []scenario, bs []*backend) ([]loadStats, error) {
	gens := make([]loader, len(scs))
	for i, sc := range scs {
		dir, err := h.runDir()
		if err != nil {
			return nil, err
		}
		p, err := startProxy(sc, h.caddyBin, h.haproxyBin, dir, bs, false)
		if err != nil {
			return nil, err
		}
		defer p.stop()
		if sc.layer4 {
			gens[i] = newLayer4Generator(fmt.Sprintf("127.0.0.1:%d", p.port), h.o.concurrency)
		} else {
			gens[i] = newGenerator(loadConfig{url: p.url, id: sc.id, concurrency: h.o.concurrency, visit: h.o.visit},
				newPopulation(h.o.users, h.o.maxUsers, h.o.arrival))
		}
		defer gens[i].close()
	}
	for _, g := range gens {
		g.load(ctx, h.o.warmup, false)
	}
	n := max(1, int(h.o.duration/max(h.o.slice, time.Millisecond)))
	per := h.o.duration / time.Duration(n)
	for s := 0; s < n; s++ {
		for i := range gens {
			gens[(i+s)%len(gens)].load(ctx, per, true)
		}
	}
	sts := make([]loadStats, len(gens))
	for i, g := range gens {
		sts[i] = g.stats("")
	}
	return sts, ctx.Err()
}

// loader is a load generator for one proxy: HTTP requests (generator) or
// TCP connections (layer4Generator).
type loader interface {
	load(ctx context.Context, d time.Duration, measure bool)
	stats(dead string) loadStats
	close()
}

// onlyMatching keeps the scenarios -only selects, and each proxy's
// round_robin beside them when any of that proxy's others is kept: every
// ratio is taken against it.
func onlyMatching(re *regexp.Regexp, scs []scenario) []scenario {
	kept := map[string]bool{}
	for _, sc := range scs {
		if !sc.base && re.MatchString(sc.proxy+"/"+sc.name) {
			kept[sc.proxy] = true
		}
	}
	return slices.DeleteFunc(slices.Clone(scs), func(sc scenario) bool {
		if sc.base {
			return !kept[sc.proxy] && !re.MatchString(sc.proxy+"/"+sc.name)
		}
		return !re.MatchString(sc.proxy + "/" + sc.name)
	})
}

// failover runs a fixed population against three fresh backends and
// kills one halfway through the measurement. Every user is sent once
// before the load (so each has a server) and once after it (so each is
// checked after the failure), which makes "moved" comparable with the
// number of users the dead backend had.
func (h *harness) failover(ctx context.Context, sc scenario) (failResult, error) {
	bs, err := startBackends("f", 3)
	if err != nil {
		return failResult{}, err
	}
	defer killAll(bs)
	dead := bs[1]
	dir, err := h.runDir()
	if err != nil {
		return failResult{}, err
	}
	p, err := startProxy(sc, h.caddyBin, h.haproxyBin, dir, bs, true)
	if err != nil {
		return failResult{}, err
	}
	defer p.stop()
	pop := newPopulation(h.o.failUsers, h.o.failUsers, 0)
	pop.populate(h.o.failUsers)
	g := newGenerator(loadConfig{
		url: p.url, id: sc.id, concurrency: h.o.concurrency, visit: h.o.visit, countAllFailures: true,
	}, pop)
	defer g.close()
	users := pop.users()
	failed := g.sweep(ctx, users)
	g.load(ctx, h.o.warmup, false)
	// The kill lands in the middle of the measured load, with requests
	// in flight on the backend's connections.
	timer := time.AfterFunc(h.o.duration/2, dead.kill)
	g.load(ctx, h.o.duration, true)
	timer.Stop()
	dead.kill() // in case the load ended early (interrupted)
	failed += g.sweep(ctx, users)
	fr := failResult{sc: sc, killed: dead.name, users: len(users), stats: g.stats(dead.name), sweepFailed: failed}
	for _, u := range users {
		if u.first == dead.name {
			fr.onDead++
		}
	}
	return fr, nil
}

// memory fills a header-keyed table with memKeys distinct keys through
// real requests and reports the proxy's RSS growth per entry. A baseline
// phase first sends as many requests over a handful of keys, so the
// memory a proxy keeps for request processing alone (buffers, pools, the
// garbage collector's headroom) is already in the "before" figure and the
// difference is the table.
func (h *harness) memory(ctx context.Context, sc scenario, bs []*backend) (memResult, error) {
	dir, err := h.runDir()
	if err != nil {
		return memResult{}, err
	}
	p, err := startProxy(sc, h.caddyBin, h.haproxyBin, dir, bs, false)
	if err != nil {
		return memResult{}, err
	}
	defer p.stop()
	g := newGenerator(loadConfig{url: p.url, id: byHeader, concurrency: h.o.concurrency, visit: 1}, newPopulation(0, 0, 0))
	defer g.close()
	n := h.o.memKeys
	base := make([]*user, n)
	for i := range base {
		base[i] = &user{id: fmt.Sprintf("base%02d", i%64)}
	}
	if f := g.sweep(ctx, base); f != 0 {
		return memResult{}, fmt.Errorf("memory baseline: %d requests failed", f)
	}
	time.Sleep(h.o.settle)
	before, err := rssKiB(p.cmd.Process.Pid)
	if err != nil {
		return memResult{}, err
	}
	keys := make([]*user, n)
	for i := range keys {
		keys[i] = &user{id: fmt.Sprintf("key-%08d", i)}
	}
	if f := g.sweep(ctx, keys); f != 0 {
		return memResult{}, fmt.Errorf("memory fill: %d requests failed", f)
	}
	time.Sleep(h.o.settle)
	after, err := rssKiB(p.cmd.Process.Pid)
	if err != nil {
		return memResult{}, err
	}
	return memResult{
		proxy: sc.proxy, table: sc.name, keys: n, baseKiB: before, afterKiB: after,
		perEntryB: float64(after-before) * 1024 / float64(n),
	}, nil
}

// machine describes where the run happened, for the report.
func machine() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	return fmt.Sprintf("%d cores (%s), %s/%s, %s", runtime.NumCPU(), cpu, runtime.GOOS, runtime.GOARCH, runtime.Version())
}
