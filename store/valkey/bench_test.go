package valkey

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-sticky/sticky/sticktable"
)

// BenchmarkFleet runs N instances (a store client and a local table each,
// no Caddy) against one redis-server under a paced load: b.N requests at
// STICKY_BENCH_RATE requests per second in total (default 10000), each to
// a random instance; 90% for keys every instance has cached (hits), 10%
// for new keys. Run with a request count, e.g.
//
//	go test -run '^$' -bench BenchmarkFleet -benchtime 20000x ./store/valkey/
//
// Reported: store calls per request overall and per hit (background work
// included), the invalidation delay of pins made on instance 0 until each
// other instance dropped its copy (p50, p99), and the mean time a request
// spends in the policy's table work against the same load on local tables
// only (ratio).
func BenchmarkFleet(b *testing.B) {
	for _, n := range []int{1, 10, 50} {
		b.Run(fmt.Sprintf("instances=%d", n), func(b *testing.B) { benchFleet(b, n) })
	}
}

const (
	benchWarmKeys = 2000
	benchNewShare = 0.10
)

var benchServers = []string{"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80", "10.0.0.5:80"}

func benchRate() float64 {
	if v, err := strconv.ParseFloat(os.Getenv("STICKY_BENCH_RATE"), 64); err == nil && v > 0 {
		return v
	}
	return 10000
}

func benchFleet(b *testing.B, n int) {
	b.StopTimer()
	r := startRedis(b)
	ins := make([]*instance, n)
	for i := range ins {
		ins[i] = newInstance(b, r, fmt.Sprintf("node%d", i), instanceOpts{expire: 30 * time.Minute,
			cfg: Config{Timeout: caddy.Duration(250 * time.Millisecond)}})
	}
	warm := make([]sticktable.Key, benchWarmKeys)
	for i := range warm {
		warm[i] = ins[0].key(b, fmtKey(i))
		if _, err := ins[0].table.Place(bg(), warm[i], benchServers[i%len(benchServers)]); err != nil {
			b.Fatal(err)
		}
	}
	// Warm every cache (not measured), a few instances at a time.
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for _, in := range ins {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			for _, k := range warm {
				_, _, _ = in.table.Lookup(bg(), k)
			}
		}()
	}
	wg.Wait()
	for _, in := range ins {
		for _, k := range warm {
			if _, ok := in.local.GetKey(k); !ok {
				_, _, _ = in.table.Lookup(bg(), k)
			}
		}
	}

	// Invalidation delays: instance 0 pins warm keys; every other instance
	// reports when its copy is dropped.
	var pinMu sync.Mutex
	pinStart := map[string]time.Time{}
	var delays []time.Duration
	for _, in := range ins[1:] {
		fn := func(_ string, k sticktable.Key) {
			now := time.Now()
			pinMu.Lock()
			if t0, ok := pinStart[k.String()]; ok {
				delays = append(delays, now.Sub(t0))
			}
			pinMu.Unlock()
		}
		in.store.evicted.Store(&fn)
	}

	rate := benchRate()
	callsBefore := make([]uint64, n)
	for i, in := range ins {
		callsBefore[i] = in.store.Stats().Calls
	}
	var hits, misses, missCalls, hitNs, missNs atomic.Int64
	serve := func(i int, rng *rand.Rand) time.Duration {
		in := ins[rng.IntN(n)]
		var k sticktable.Key
		if rng.Float64() < benchNewShare {
			k = in.key(b, "new-"+strconv.Itoa(i))
		} else {
			k = warm[rng.IntN(len(warm))]
		}
		t0 := time.Now()
		e, o := in.local.MatchKey(k)
		if o == sticktable.OutcomeHit {
			in.table.Touch(k, e)
			d := time.Since(t0)
			hits.Add(1)
			hitNs.Add(int64(d))
			return d
		}
		// A key known at request time: one SET NX GET both places a new
		// key and returns an existing one.
		_, _ = in.table.Place(context.Background(), k, benchServers[rng.IntN(len(benchServers))])
		d := time.Since(t0)
		misses.Add(1)
		missCalls.Add(1)
		missNs.Add(int64(d))
		return d
	}
	pins := func(stop <-chan struct{}) {
		if n < 2 {
			return
		}
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for j := 0; ; j++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			k := warm[j%len(warm)]
			pinMu.Lock()
			pinStart[k.String()] = time.Now()
			pinMu.Unlock()
			_ = ins[0].table.Pin(bg(), k, benchServers[(j+1)%len(benchServers)])
		}
	}
	storeNs := runPaced(b, rate, b.N, serve, nil)
	var calls uint64
	for i, in := range ins {
		calls += in.store.Stats().Calls - callsBefore[i]
	}
	total := hits.Load() + misses.Load()
	// Second run, not counted above: the same load while instance 0 pins
	// a warm key every 10 ms.
	runPaced(b, rate, b.N/2, serve, pins)

	// The same load on local tables alone.
	locals := make([]*sticktable.Table, n)
	for i := range locals {
		t, _ := sticktable.NewWithOptions(sticktable.Config{Size: 1 << 20, Expire: 30 * time.Minute}, sticktable.Options{})
		defer t.Close()
		for j := range warm {
			_, _ = t.Store(fmtKey(j), benchServers[j%len(benchServers)])
		}
		locals[i] = t
	}
	var localHits, localHitNs atomic.Int64
	localNs := runPaced(b, rate, b.N, func(i int, rng *rand.Rand) time.Duration {
		t := locals[rng.IntN(n)]
		var k sticktable.Key
		if rng.Float64() < benchNewShare {
			k, _ = t.ParseKey("new-" + strconv.Itoa(i))
		} else {
			k = warm[rng.IntN(len(warm))]
		}
		t0 := time.Now()
		if _, o := t.MatchKey(k); o == sticktable.OutcomeHit {
			d := time.Since(t0)
			localHits.Add(1)
			localHitNs.Add(int64(d))
			return d
		}
		_, _ = t.StoreKey(k, benchServers[rng.IntN(len(benchServers))])
		return time.Since(t0)
	}, nil)

	b.ReportMetric(float64(calls)/float64(total), "calls/req")
	// Every miss made exactly one call; the rest is background work
	// (refreshes, reads again after an invalidation crossed a reply).
	bgCalls := float64(calls) - float64(missCalls.Load())
	b.ReportMetric(max(bgCalls, 0)/float64(max(hits.Load(), 1)), "calls/hit")
	hitStore := float64(hitNs.Load()) / float64(max(hits.Load(), 1))
	hitLocal := float64(localHitNs.Load()) / float64(max(localHits.Load(), 1))
	b.ReportMetric(hitStore, "ns/hit-store")
	b.ReportMetric(hitLocal, "ns/hit-local")
	b.ReportMetric(hitStore/hitLocal, "hit-ratio")
	b.ReportMetric(float64(missNs.Load())/float64(max(misses.Load(), 1))/1000, "µs/miss-store")
	b.ReportMetric(storeNs/localNs, "ratio")
	pinMu.Lock()
	if len(delays) > 0 {
		sort.Slice(delays, func(i, j int) bool { return delays[i] < delays[j] })
		b.ReportMetric(float64(delays[len(delays)/2].Microseconds())/1000, "inval-p50-ms")
		b.ReportMetric(float64(delays[len(delays)*99/100].Microseconds())/1000, "inval-p99-ms")
		b.ReportMetric(float64(len(delays)), "inval-samples")
	}
	pinMu.Unlock()
}

// runPaced runs count calls of req, the i-th not before start + i/rate, on
// enough goroutines that pacing, not concurrency, bounds the rate; side
// runs alongside until the requests are done. It returns the mean time
// req reported.
func runPaced(b *testing.B, rate float64, count int, req func(i int, rng *rand.Rand) time.Duration, side func(stop <-chan struct{})) float64 {
	stop := make(chan struct{})
	var sideDone sync.WaitGroup
	if side != nil {
		sideDone.Add(1)
		go func() { defer sideDone.Done(); side(stop) }()
	}
	var next atomic.Int64
	var busy atomic.Int64
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	b.StartTimer()
	var wg sync.WaitGroup
	for w := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for {
				i := int(next.Add(1) - 1)
				if i >= count {
					return
				}
				if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
					time.Sleep(d)
				}
				busy.Add(int64(req(i, rng)))
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	close(stop)
	sideDone.Wait()
	return float64(busy.Load()) / float64(max(count, 1))
}

// BenchmarkHitPath is the per-request cost of a hit: the local table alone
// against the local table with the store's Touch (the TTL-refresh
// throttle), without pacing noise.
func BenchmarkHitPath(b *testing.B) {
	r := startRedis(b)
	in := newInstance(b, r, "a", instanceOpts{expire: 30 * time.Minute})
	keys := make([]sticktable.Key, 1024)
	for i := range keys {
		keys[i] = in.key(b, fmtKey(i))
		_, _ = in.table.Place(bg(), keys[i], benchServers[i%len(benchServers)])
	}
	b.Run("local", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			k := keys[i&1023]
			if _, o := in.local.MatchKey(k); o != sticktable.OutcomeHit {
				b.Fatal("miss")
			}
		}
	})
	b.Run("store", func(b *testing.B) {
		b.ReportAllocs()
		calls := in.store.Stats().Calls
		for i := 0; i < b.N; i++ {
			k := keys[i&1023]
			e, o := in.local.MatchKey(k)
			if o != sticktable.OutcomeHit {
				b.Fatal("miss")
			}
			in.table.Touch(k, e)
		}
		b.ReportMetric(float64(in.store.Stats().Calls-calls)/float64(b.N), "calls/op")
	})
}
