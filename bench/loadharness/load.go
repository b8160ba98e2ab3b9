package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// lockedWriter serialises writes from a child's stdout and stderr.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// user is one simulated client: an identity, the cookies a browser would
// keep, and which servers answered it. A user is held by one worker at a
// time, as a browser tab sends one request after another, so its fields
// need no lock; the population's mutex hands it over between workers.
type user struct {
	id      string
	cookies []*http.Cookie

	first     string   // the server of the first successful answer
	last      string   // the server of the latest successful answer
	changes   []string // "from>to" for every change of server
	requests  int
	lastError bool
}

// see records which server answered a successful request.
func (u *user) see(server string) {
	u.requests++
	switch {
	case u.first == "":
		u.first, u.last = server, server
	case server != u.last:
		u.changes = append(u.changes, u.last+">"+server)
		u.last = server
	}
}

// absorb stores the response's cookies as a browser's jar would: same
// name replaces, Max-Age<0 deletes. Only the name and value matter here,
// as every request goes to the same origin and path.
func (u *user) absorb(setCookies []string) {
	for _, line := range setCookies {
		c, err := http.ParseSetCookie(line)
		if err != nil {
			continue
		}
		i := slices.IndexFunc(u.cookies, func(k *http.Cookie) bool { return k.Name == c.Name })
		switch {
		case c.MaxAge < 0 && i >= 0:
			u.cookies = slices.Delete(u.cookies, i, i+1)
		case c.MaxAge < 0:
		case i >= 0:
			u.cookies[i] = &http.Cookie{Name: c.Name, Value: c.Value}
		default:
			u.cookies = append(u.cookies, &http.Cookie{Name: c.Name, Value: c.Value})
		}
	}
}

// population hands users to workers: new users arrive at a set rate (their
// first request carries no cookie, as a browser's first visit), the rest
// are returning users picked at random among those not busy.
type population struct {
	mu      sync.Mutex
	idle    []*user
	all     []*user
	start   time.Time     // when the current load period began; zero when paused
	active  time.Duration // load time before the current period
	initial int
	rate    float64 // new users per second after the start
	max     int
}

func newPopulation(initial, max int, rate float64) *population {
	if max < initial {
		max = initial
	}
	return &population{initial: initial, max: max, rate: rate}
}

// resume and pause bracket a load period. New users arrive only while
// load runs, so a configuration waiting for its next period does not
// receive a burst of arrivals when it resumes.
func (p *population) resume() {
	p.mu.Lock()
	p.start = time.Now()
	p.mu.Unlock()
}

func (p *population) pause() {
	p.mu.Lock()
	p.active += time.Since(p.start)
	p.start = time.Time{}
	p.mu.Unlock()
}

func (p *population) newUserLocked() *user {
	u := &user{id: fmt.Sprintf("u%07d", len(p.all))}
	p.all = append(p.all, u)
	return u
}

// take returns a user for one visit, or nil when none is free (every user
// is busy and the population is at its bound).
func (p *population) take() *user {
	p.mu.Lock()
	defer p.mu.Unlock()
	elapsed := p.active
	if !p.start.IsZero() {
		elapsed += time.Since(p.start)
	}
	due := p.initial + int(p.rate*elapsed.Seconds())
	if due > p.max {
		due = p.max
	}
	if len(p.all) < due {
		return p.newUserLocked()
	}
	if len(p.idle) == 0 {
		if len(p.all) < p.max {
			return p.newUserLocked()
		}
		return nil
	}
	i := rand.IntN(len(p.idle))
	u := p.idle[i]
	p.idle[i] = p.idle[len(p.idle)-1]
	p.idle = p.idle[:len(p.idle)-1]
	return u
}

func (p *population) give(u *user) {
	p.mu.Lock()
	p.idle = append(p.idle, u)
	p.mu.Unlock()
}

func (p *population) users() []*user {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.all)
}

// worker is one client connection: its own transport with one kept-alive
// connection, from its own loopback address. Giving every connection a
// distinct 127.0.0.x source makes client-address persistence (ip_hash,
// stick on {client_ip}) see as many clients as there are connections
// instead of a single one; for those scenarios the worker is the "user".
type worker struct {
	client *http.Client
	addr   string
	ipUser *user

	count     int64
	failed    int64
	latencies []time.Duration
}

func newWorker(i int) *worker {
	ip := net.IPv4(127, byte(i/240), byte(10+i%240), 1)
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 5 * time.Second}
	tr := &http.Transport{
		DialContext:         d.DialContext,
		MaxIdleConns:        1,
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}
	return &worker{
		client: &http.Client{Transport: tr, Timeout: 10 * time.Second},
		addr:   ip.String(),
		ipUser: &user{id: ip.String()},
	}
}

// loadConfig is one load run against one proxy.
type loadConfig struct {
	url         string
	id          identity
	concurrency int
	visit       int // requests per visit of a user

	// countAllFailures counts failed requests outside measured periods
	// too: in the failover scenario each one is a user who saw an error.
	countAllFailures bool
}

// generator runs workers against one proxy URL.
type generator struct {
	cfg      loadConfig
	workers  []*worker
	pop      *population
	measured time.Duration
}

func newGenerator(cfg loadConfig, pop *population) *generator {
	g := &generator{cfg: cfg, pop: pop}
	for i := 0; i < cfg.concurrency; i++ {
		g.workers = append(g.workers, newWorker(i))
	}
	return g
}

func (g *generator) close() {
	for _, w := range g.workers {
		w.client.CloseIdleConnections()
	}
}

// do sends one request as u from w and records the answer on the user the
// scenario identifies. It reports whether the request succeeded.
func (g *generator) do(ctx context.Context, w *worker, u *user) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.cfg.url, nil)
	if err != nil {
		return false
	}
	req.Header.Set("X-User", u.id)
	for _, c := range u.cookies {
		req.AddCookie(c)
	}
	res, err := w.client.Do(req)
	if err != nil {
		u.lastError = true
		return false
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		u.lastError = true
		return false
	}
	u.absorb(res.Header.Values("Set-Cookie"))
	server := res.Header.Get("X-Backend")
	if g.cfg.id == byIP {
		w.ipUser.see(server)
	} else {
		u.see(server)
	}
	return true
}

// load runs the workers against the proxy for d. With measure set, the
// requests completed within d count toward the stats and d toward the
// measured time; without it the period is warm-up: it fills connection
// pools, the proxy's tables and caches, and gives early users their
// cookies. A generator can be loaded many times: the harness interleaves
// short periods of several configurations so drift hits all alike.
func (g *generator) load(ctx context.Context, d time.Duration, measure bool) {
	start := time.Now()
	end := start.Add(d)
	g.pop.resume()
	defer g.pop.pause()
	var wg sync.WaitGroup
	for _, w := range g.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && time.Now().Before(end) {
				u := g.pop.take()
				if u == nil {
					time.Sleep(time.Millisecond)
					continue
				}
				for range g.cfg.visit {
					t0 := time.Now()
					ok := g.do(ctx, w, u)
					t1 := time.Now()
					inWindow := measure && !t1.After(end)
					switch {
					case ok && inWindow:
						w.count++
						w.latencies = append(w.latencies, t1.Sub(t0))
					case !ok && (inWindow || g.cfg.countAllFailures):
						w.failed++
					}
					if t1.After(end) {
						break
					}
				}
				g.pop.give(u)
			}
		}()
	}
	wg.Wait()
	if measure {
		g.measured += d
	}
}

// sweep sends exactly one request for every user, spread over the
// workers: it gives every user a server before a failure and checks every
// user's server after it. It returns the number of failed requests.
func (g *generator) sweep(ctx context.Context, users []*user) int64 {
	ch := make(chan *user)
	var failed atomic.Int64
	var wg sync.WaitGroup
	for _, w := range g.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for u := range ch {
				if !g.do(ctx, w, u) {
					failed.Add(1)
				}
			}
		}()
	}
	for _, u := range users {
		ch <- u
	}
	close(ch)
	wg.Wait()
	return failed.Load()
}

// loadStats summarises a run.
type loadStats struct {
	requests  int64
	failed    int64
	rps       float64
	p50, p99  time.Duration
	tracked   int // users (or client addresses) that were answered
	switched  int // of those, how many saw more than one server
	moved     int // failover: users whose only change was off the dead server
	violators int // failover: users who changed server otherwise
}

// setRates fills in the rate over the measured time and the latency
// percentiles of lat (which it sorts).
func (s *loadStats) setRates(lat []time.Duration, measured time.Duration) {
	if measured > 0 {
		s.rps = float64(s.requests) / measured.Seconds()
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		s.p50 = lat[len(lat)/2]
		s.p99 = lat[min(len(lat)-1, len(lat)*99/100)]
	}
}

func (g *generator) stats(dead string) loadStats {
	var s loadStats
	var lat []time.Duration
	for _, w := range g.workers {
		s.requests += w.count
		s.failed += w.failed
		lat = append(lat, w.latencies...)
	}
	s.setRates(lat, g.measured)
	var tracked []*user
	if g.cfg.id == byIP {
		for _, w := range g.workers {
			tracked = append(tracked, w.ipUser)
		}
	} else {
		tracked = g.pop.users()
	}
	for _, u := range tracked {
		if u.first == "" {
			continue
		}
		s.tracked++
		if len(u.changes) == 0 {
			continue
		}
		s.switched++
		// A legitimate move is one change, away from the dead server;
		// anything else (a second change, a change between live servers)
		// is a broken promise.
		if dead != "" && len(u.changes) == 1 && strings.HasPrefix(u.changes[0], dead+">") {
			s.moved++
		} else {
			s.violators++
		}
	}
	return s
}

// populate creates n users up front, for scenarios that need to know every
// user before the load starts.
func (p *population) populate(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for range n {
		p.idle = append(p.idle, p.newUserLocked())
	}
}
