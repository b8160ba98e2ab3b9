package selection

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkTableHit measures a stick_table hit (`on {http.vars.client_ip}`,
// the key in the table, its server available) and reports its
// allocations. fresh: a new Caddy-like request per iteration (vars with
// client_ip, a replacer with Caddy's HTTP placeholders), built outside the
// timer; warm: 1000 requests reused, their vars cleared (timed) and their
// replacers renewed every 1000 iterations (outside the timer).
//
//	go test -run '^$' -bench TableHit -benchmem ./selection/
func BenchmarkTableHit(b *testing.B) {
	for _, mode := range []string{"fresh", "warm"} {
		b.Run("requests="+mode, func(b *testing.B) {
			p := tableWithRules(b, &StickTable{Rules: []TableRule{{Key: "{http.vars.client_ip}", Match: true, Store: true}}})
			pool := newPool(10)
			const users = 1000 // a multiple of the pool size: request i goes to pool[i%10]
			ips := make([]string, users)
			for i := range ips {
				ips[i] = fmt.Sprintf("10.9.%d.%d", i/200, i%200+1)
				if _, err := p.table.Store(ips[i], pool[i%len(pool)].Dial); err != nil {
					b.Fatal(err)
				}
			}
			w := httptest.NewRecorder()
			b.ReportAllocs()
			run := func(i int, r *http.Request) {
				if p.Select(pool, r, w) != pool[i%len(pool)] {
					b.Fatal("wrong upstream")
				}
			}
			if mode == "fresh" {
				benchFreshClients(b, ips, run)
				return
			}
			benchWarmClients(b, ips, run)
		})
	}
}

// benchFreshClients is benchFreshRequests for requests from client IPs.
func benchFreshClients(b *testing.B, ips []string, fn func(i int, r *http.Request)) {
	benchFresh(b, func(i int) *http.Request { return clientRequest(ips[i%len(ips)], "") }, fn)
}

// benchWarmClients is benchWarmRequests for requests from client IPs.
func benchWarmClients(b *testing.B, ips []string, fn func(i int, r *http.Request)) {
	reqs := make([]*http.Request, len(ips))
	boxed := make([]any, len(ips)) // boxing an IP per iteration would allocate
	for i, ip := range ips {
		boxed[i] = ip
	}
	renew := func() {
		for i, ip := range ips {
			reqs[i] = clientRequest(ip, "")
		}
	}
	renew()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%len(reqs) == len(reqs)-1 {
			b.StopTimer()
			renew()
			b.StartTimer()
		}
		r := reqs[i%len(reqs)]
		vars := varsOf(r)
		clear(vars)
		vars["client_ip"] = boxed[i%len(ips)]
		fn(i, r)
	}
}
