package selection

import (
	"fmt"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// TestRendezvousMovesOnlyWhatItMust checks the property first_choice hash
// is for: removing a server moves only its keys, adding one moves about
// 1/(n+1) of the keys, all of them to the new server.
func TestRendezvousMovesOnlyWhatItMust(t *testing.T) {
	pool := newPool(5)
	const keys = 5000
	before := make([]*reverseproxy.Upstream, keys)
	for i := range before {
		before[i] = rendezvous(nil, pool, fmt.Sprintf("user-%d", i), nil)
	}
	// same answer every time, and for a copy of the pool in another order
	shuffled := dynamicPool(pool, 4, 2, 0, 3, 1)
	for i := range before {
		if got := rendezvous(nil, shuffled, fmt.Sprintf("user-%d", i), nil); got.Dial != before[i].Dial {
			t.Fatalf("user-%d: %s, then %s with the pool reordered", i, before[i].Dial, got.Dial)
		}
	}
	// remove pool[2]
	removed := reverseproxy.UpstreamPool{pool[0], pool[1], pool[3], pool[4]}
	moved := 0
	for i := range before {
		got := rendezvous(nil, removed, fmt.Sprintf("user-%d", i), nil)
		if got.Dial != before[i].Dial {
			moved++
			if before[i] != pool[2] {
				t.Fatalf("user-%d moved from a server that stayed", i)
			}
		} else if before[i] == pool[2] {
			t.Fatalf("user-%d still on the removed server", i)
		}
	}
	share := float64(moved) / keys
	if share < 0.15 || share > 0.25 {
		t.Errorf("removing 1 of 5 servers moved %.2f of the keys, want about 0.20", share)
	}
	// add a sixth server
	grown := append(append(reverseproxy.UpstreamPool{}, pool...), newPool(6)[5])
	moved = 0
	for i := range before {
		got := rendezvous(nil, grown, fmt.Sprintf("user-%d", i), nil)
		if got.Dial != before[i].Dial {
			moved++
			if got != grown[5] {
				t.Fatalf("user-%d moved between old servers", i)
			}
		}
	}
	if share := float64(moved) / keys; share < 0.12 || share > 0.22 {
		t.Errorf("adding a 6th server moved %.2f of the keys, want about 0.17", share)
	}
	// excluded (failed) servers are skipped
	for i := 0; i < 100; i++ {
		k := fmt.Sprintf("user-%d", i)
		first := rendezvous(nil, pool, k, nil)
		if second := rendezvous(nil, pool, k, []string{first.Dial}); second == nil || second == first {
			t.Fatalf("%s: exclusion ignored", k)
		}
	}
}

func TestSinglePlaceholder(t *testing.T) {
	for in, want := range map[string]string{
		"{http.vars.client_ip}":     "http.vars.client_ip",
		"{a}{b}":                    "",
		"x{a}":                      "",
		"{}":                        "",
		"{http.request.header.X-U}": "http.request.header.X-U",
	} {
		if got := singlePlaceholder(in); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}
