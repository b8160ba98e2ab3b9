package layer4

import (
	"fmt"
	"testing"

	"github.com/mholt/caddy-l4/layer4"
	"github.com/mholt/caddy-l4/modules/l4proxy"

	"github.com/caddy-sticky/sticky/sticktable"
)

// BenchmarkL4Select is the cost of one Select, the policy's whole share of
// a connection, for 1000 known clients: stick_table against caddy-l4's
// round_robin and ip_hash. Each connection's variables are cleared as a new
// connection's would be.
//
//	go test ./layer4/ -run '^$' -bench L4Select -benchmem
func BenchmarkL4Select(b *testing.B) {
	pool := newPool(3)
	conns := make([]*layer4.Connection, 1000)
	for i := range conns {
		conns[i] = connFrom(fmt.Sprintf("10.1.%d.%d", i/250, i%250+1), false)
	}
	st := newPolicy(b, &StickTable{FallbackRaw: roundRobin()}, sticktable.KeyIP)
	for _, c := range conns {
		st.Select(pool, c)
	}
	for _, bc := range []struct {
		name string
		sel  l4proxy.Selector
	}{
		{"stick_table_hit", st},
		{"round_robin", new(l4proxy.RoundRobinSelection)},
		{"ip_hash", new(l4proxy.IPHashSelection)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				c := conns[i%len(conns)]
				c.SetVar(st.varKey, nil)
				if bc.sel.Select(pool, c) == nil {
					b.Fatal("no upstream")
				}
			}
		})
	}
}
