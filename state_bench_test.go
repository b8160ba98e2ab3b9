package sticky

import (
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// BenchmarkReloadLookupPause measures lookups on a table of a million
// entries while the config is reloaded over and over (the table is kept;
// a reload plans, commits at the old config's stop and releases the old
// config). It reports the lookups' p99 and worst latency during reloads
// beside the same with no reload, and how long a reload takes in the
// sticky app. Target: no pause over 1 ms.
//
//	go test -run '^$' -bench ReloadLookupPause -benchtime 20x .
func BenchmarkReloadLookupPause(b *testing.B) {
	prev := state
	state = newStateOwner()
	defer func() { state = prev }()
	const n = 1_000_000
	cfg := `{"tables": {"s": {"type": "ip", "size": 2000000, "expire": 3600000000000}}}`
	provision := func() (*App, caddy.Context) {
		app := new(App)
		if err := json.Unmarshal([]byte(cfg), app); err != nil {
			b.Fatal(err)
		}
		ctx := testContext(b)
		if err := app.Provision(ctx); err != nil {
			b.Fatal(err)
		}
		if err := app.Start(); err != nil {
			b.Fatal(err)
		}
		emit(b, ctx, eventStarted)
		return app, ctx
	}
	running, runningCtx := provision()
	tbl, _ := running.StickTable("s")
	for i := 0; i < n; i++ {
		_, _ = tbl.Store(fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255), "web1:80")
	}
	keys := make([]string, 4096)
	for i := range keys {
		j := (i * 2654435761) % n
		keys[i] = fmt.Sprintf("10.%d.%d.%d", j>>16, (j>>8)&255, j&255)
	}
	measure := func(during func()) []time.Duration {
		var stop atomic.Bool
		var lat []time.Duration
		var wg sync.WaitGroup
		ready := make(chan struct{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				start := time.Now()
				tbl.Lookup(keys[i%len(keys)])
				lat = append(lat, time.Since(start))
				if i == 0 {
					close(ready)
				}
			}
		}()
		<-ready
		during()
		stop.Store(true)
		wg.Wait()
		return lat
	}
	base := measure(func() { time.Sleep(200 * time.Millisecond) })
	var reloadTotal time.Duration
	reloads := 0
	during := measure(func() {
		for range b.N {
			start := time.Now()
			next, nextCtx := provision()
			emit(b, runningCtx, eventStopping) // Caddy commits the new config here
			_ = running.Stop()
			_ = running.Cleanup()
			running, runningCtx = next, nextCtx
			reloadTotal += time.Since(start)
			reloads++
		}
	})
	emit(b, runningCtx, eventStopping)
	_ = running.Stop()
	_ = running.Cleanup()
	q := func(d []time.Duration, p float64) float64 {
		s := slices.Clone(d)
		slices.Sort(s)
		return float64(s[int(float64(len(s)-1)*p)].Nanoseconds())
	}
	b.ReportMetric(q(base, 0.99), "idle-p99-ns")
	b.ReportMetric(q(base, 1), "idle-max-ns")
	b.ReportMetric(q(during, 0.99), "reload-p99-ns")
	b.ReportMetric(q(during, 1), "reload-max-ns")
	b.ReportMetric(float64(reloadTotal.Microseconds())/float64(reloads), "reload-us")
}
