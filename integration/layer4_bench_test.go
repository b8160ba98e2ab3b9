package integration

import (
	"bufio"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"
)

// BenchmarkLayer4Policies measures whole TCP connections per second through
// a real caddy-l4 proxy (client dial from its own 127.0.1.x address, dial of
// the backend, the backend's answer, close) with the stick_table policy and
// with caddy-l4's round_robin and ip_hash, in one Caddy and one run: every
// iteration makes one connection through each policy, in rotating order, so
// the machine's noise falls on all three alike. It reports connections per
// second of each (from the median connection time) and the ratios of
// stick_table to the other two.
//
//	go test ./integration/ -run '^$' -bench Layer4Policies -benchtime 3000x -count 3
func BenchmarkLayer4Policies(b *testing.B) {
	bs := []*l4Backend{startTCPBackend(b, "pg1", "127.0.0.1:0"), startTCPBackend(b, "pg2", "127.0.0.1:0"), startTCPBackend(b, "pg3", "127.0.0.1:0")}
	policies := []string{"stick_table pg {\n\t\t\t\t\t\tfallback round_robin\n\t\t\t\t\t}", "round_robin", "ip_hash"}
	ports := make([]int, len(policies))
	listeners := ""
	for i, pol := range policies {
		ports[i] = freePort(b)
		listeners += fmt.Sprintf(`
		127.0.0.1:%d {
			route {
				proxy %s {
					lb_policy %s
				}
			}
		}`, ports[i], l4Upstreams(bs), pol)
	}
	cfg := fmt.Sprintf(`{
	admin off
	persist_config off
	storage file_system %s
	log {
		level ERROR
	}
	sticky {
		table pg {
			type ip
		}
	}
	layer4 {%s
	}
}
`, b.TempDir(), listeners)
	loadCaddy(b, adapt(b, cfg))

	const clients = 64
	dialers := make([]net.Dialer, clients)
	for i := range dialers {
		dialers[i] = net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(clientIP(100 + i))}, Timeout: 5 * time.Second}
	}
	addrs := make([]string, len(ports))
	for i, p := range ports {
		addrs[i] = fmt.Sprintf("127.0.0.1:%d", p)
	}
	connect := func(d *net.Dialer, addr string) {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
			b.Fatalf("%s: %v", addr, err)
		}
		_ = c.Close()
	}
	// warm up: every client once through every policy (stick_table stores)
	for i := range dialers {
		for _, a := range addrs {
			connect(&dialers[i], a)
		}
	}
	took := make([][]time.Duration, len(policies))
	for p := range took {
		took[p] = make([]time.Duration, 0, b.N)
	}
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		d := &dialers[n%clients]
		for k := range policies {
			p := (n + k) % len(policies)
			start := time.Now()
			connect(d, addrs[p])
			took[p] = append(took[p], time.Since(start))
		}
	}
	b.StopTimer()
	// The rate is one over the median connection time: bursts of load
	// from other work on a shared machine hit a few connections hard and
	// would dominate a mean.
	rate := func(p int) float64 {
		slices.Sort(took[p])
		return 1 / took[p][len(took[p])/2].Seconds()
	}
	b.ReportMetric(rate(0), "stick_table_conn/s")
	b.ReportMetric(rate(1), "round_robin_conn/s")
	b.ReportMetric(rate(2), "ip_hash_conn/s")
	b.ReportMetric(rate(0)/rate(1), "x_round_robin")
	b.ReportMetric(rate(0)/rate(2), "x_ip_hash")
}
