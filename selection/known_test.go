package selection

import (
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

func TestSeenPool(t *testing.T) {
	a, b, c := &reverseproxy.Upstream{Dial: "a:1"}, &reverseproxy.Upstream{Dial: "b:1"}, &reverseproxy.Upstream{Dial: "c:1"}
	var sp seenPool
	if sp.load() != nil {
		t.Fatal("a fresh policy has seen a pool")
	}
	pool := reverseproxy.UpstreamPool{a, b}
	sp.observe(pool)
	first := sp.p.Load()
	if got := sp.load(); len(got) != 2 || got[0] != a || got[1] != b {
		t.Fatalf("seen %v", got)
	}
	if n := testing.AllocsPerRun(100, func() { sp.observe(pool) }); n != 0 {
		t.Fatalf("observing the same pool allocates %v times", n)
	}
	// a new slice with the same members (a dynamic source without a
	// cache) keeps the record
	sp.observe(reverseproxy.UpstreamPool{a, b})
	if sp.p.Load() != first {
		t.Fatal("an equal pool replaced the record")
	}
	sp.observe(reverseproxy.UpstreamPool{a, c})
	if got := sp.load(); len(got) != 2 || got[1] != c {
		t.Fatalf("a changed pool was not recorded: %v", got)
	}
	sp.observe(reverseproxy.UpstreamPool{a})
	if got := sp.load(); len(got) != 1 {
		t.Fatalf("a shrunk pool was not recorded: %v", got)
	}
}
