package selection

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

var balanceTableSeq int

// hashTable is a stick_table policy with first_choice hash and the factor,
// on a fresh table.
func hashTable(t *testing.T, factor int) *StickTable {
	balanceTableSeq++
	cfg := fmt.Sprintf(`{"table": "balance_%d", "first_choice": "hash", "balance_factor": %d, "rules": [{"key": "{http.request.header.X-User}", "match": true, "store": true}]}`, balanceTableSeq, factor)
	return provisionedTable(t, cfg)
}

// place puts every key through the policy's placement, storing it as a
// request would, and returns the server of each key and the load per
// server.
func place(p *StickTable, pool reverseproxy.UpstreamPool, keys []string) (map[string]string, map[string]int) {
	where := make(map[string]string, len(keys))
	load := map[string]int{}
	for _, k := range keys {
		up := p.placeByHash(pool, k, nil)
		if _, err := p.table.Store(k, up.Dial); err != nil {
			panic(err)
		}
		where[k] = up.Dial
		load[up.Dial]++
	}
	return where, load
}

func spread(load map[string]int, servers int) (maxOverMean float64) {
	total, most := 0, 0
	for _, n := range load {
		total += n
		most = max(most, n)
	}
	return float64(most) / (float64(total) / float64(servers))
}

func userKeys(n int, seed uint64) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("user-%d-%d", seed, i)
	}
	return keys
}

// Issue 13: with balance_factor no server holds more than factor/100 of
// the mean (rounded up), and the spread is reported beside plain
// rendezvous. Figures: go test ./selection -run BalanceFactorSpread -v
func TestBalanceFactorSpread(t *testing.T) {
	const servers = 10
	pool := newPool(servers)
	for _, keys := range []int{50, 1000, 20000} {
		plain := hashTable(t, 0)
		_, plainLoad := place(plain, pool, userKeys(keys, 1))
		for _, factor := range []int{110, 125, 150} {
			p := hashTable(t, factor)
			_, load := place(p, pool, userKeys(keys, 1))
			mean := float64(keys) / servers
			limit := (keys*factor + 100*servers - 1) / (100 * servers)
			for dial, n := range load {
				if n > limit {
					t.Errorf("%d keys, factor %d: %s holds %d, limit %d", keys, factor, dial, n, limit)
				}
			}
			t.Logf("%6d keys on %d servers: max/mean %.3f plain, %.3f with balance_factor %d (limit %d, mean %.1f)",
				keys, servers, spread(plainLoad, servers), spread(load, servers), factor, limit, mean)
		}
	}
}

// Issue 13: the share of keys two instances that share nothing (no peers)
// still place on the same server, when each sees the users in its own
// order. Plain rendezvous agrees on every key; bounded loads trade some of
// that for the bound. Figures: go test ./selection -run BalanceFactorAgreement -v
func TestBalanceFactorAgreement(t *testing.T) {
	const servers, keys = 10, 5000
	pool := newPool(servers)
	all := userKeys(keys, 2)
	shuffled := append([]string(nil), all...)
	rand.New(rand.NewPCG(7, 7)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	for _, factor := range []int{0, 110, 125, 150, 200} {
		a, b := hashTable(t, factor), hashTable(t, factor)
		whereA, _ := place(a, pool, all)
		whereB, _ := place(b, pool, shuffled)
		same := 0
		for _, k := range all {
			if whereA[k] == whereB[k] {
				same++
			}
		}
		share := float64(same) / keys
		t.Logf("balance_factor %3d: %.1f%% of %d keys placed alike by two instances seeing them in different orders", factor, 100*share, keys)
		if factor == 0 && same != keys {
			t.Errorf("plain rendezvous: %d of %d keys placed alike, want all", same, keys)
		}
		if factor >= 125 && share < 0.5 {
			t.Errorf("balance_factor %d: only %.2f placed alike", factor, share)
		}
	}
}

// Existing keys never move because of the factor: a key in the table stays
// on its server however loaded that server is.
func TestBalanceFactorNeverMovesExistingKeys(t *testing.T) {
	pool := newPool(4)
	p := hashTable(t, 110)
	for i := 0; i < 200; i++ {
		if _, err := p.table.Store(fmt.Sprintf("old-%d", i), pool[0].Dial); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 200; i += 20 {
		r := userRequest(fmt.Sprintf("old-%d", i), "")
		if up := p.Select(pool, r, httptest.NewRecorder()); up != pool[0] {
			t.Fatalf("old-%d moved to %v", i, up)
		}
	}
	// new keys avoid the overloaded server
	for i := 0; i < 50; i++ {
		if up := p.Select(pool, userRequest(fmt.Sprintf("new-%d", i), ""), httptest.NewRecorder()); up == pool[0] {
			t.Fatalf("new-%d placed on the server holding 200 of 200 keys", i)
		}
	}
}

func TestBalanceFactorConfig(t *testing.T) {
	var p StickTable
	err := p.UnmarshalCaddyfile(caddyfile.NewTestDispenser("stick_table t {\n first_choice hash {\n  balance_factor 125\n }\n fallback least_conn\n}"))
	if err != nil || p.FirstChoice != "hash" || p.BalanceFactor != 125 || p.FallbackRaw == nil {
		t.Fatalf("parse: %v %+v", err, p.BalanceFactor)
	}
	for src, want := range map[string]string{
		"stick_table t {\n first_choice hash {\n  balance_factor 100\n }\n}":                       "Testfile:3",
		"stick_table t {\n first_choice hash {\n  balance_factor x\n }\n}":                         "over 100",
		"stick_table t {\n first_choice hash {\n  balance_factor 125\n  balance_factor 130\n }\n}": "Testfile:4",
		"stick_table t {\n first_choice hash {\n  bounded 125\n }\n}":                              "unrecognized first_choice option",
		"stick_table t {\n first_choice hash {\n  balance_factor\n }\n}":                           "Testfile:3",
	} {
		var p StickTable
		err := p.UnmarshalCaddyfile(caddyfile.NewTestDispenser(src))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", src, err, want)
		}
	}
	for cfg, want := range map[string]string{
		`{"table": "x", "balance_factor": 125}`:                        "needs first_choice hash",
		`{"table": "x", "first_choice": "hash", "balance_factor": 90}`: "must be over 100",
	} {
		p := new(StickTable)
		_ = json.Unmarshal([]byte(cfg), p)
		if err := p.setup(newTestContext(t)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", cfg, err, want)
		}
	}
}
