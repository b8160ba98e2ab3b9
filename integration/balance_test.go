package integration

import (
	"fmt"
	"testing"
)

// Issue 13: first_choice hash { balance_factor 125 } through Caddy: no
// backend holds more than 125% of the mean (rounded up) of the users placed,
// where plain rendezvous over the same users exceeds it, and users already
// stuck stay where they are.
func TestBalanceFactorThroughCaddy(t *testing.T) {
	bs := startBackends(t, 4)
	const users = 40
	count := func(port int, prefix string) (map[string]string, map[string]int) {
		where, load := map[string]string{}, map[string]int{}
		for i := 0; i < users; i++ {
			u := fmt.Sprintf("%s%d", prefix, i)
			b := as(t, port, u, "").Body
			where[u] = b
			load[b]++
		}
		return where, load
	}
	// find a user set that plain rendezvous spreads unevenly, so the test
	// shows the factor at work
	plainPort := tableSite(t, bs, "\t\ttable plain_users", `stick_table plain_users {
			on {header.X-User}
			first_choice hash
		}`, "")
	prefix, plainMax := "", 0
	for attempt := 0; attempt < 20 && plainMax <= 13; attempt++ {
		prefix = fmt.Sprintf("b%d-", attempt)
		_, load := count(plainPort, prefix)
		plainMax = 0
		for _, n := range load {
			plainMax = max(plainMax, n)
		}
	}
	if plainMax <= 13 {
		t.Skip("no user set found that plain rendezvous spreads over 125% of the mean")
	}
	port := freePort(t)
	if err := loadAgain(adapt(t, tableConfig(t, port, bs, "\t\ttable bounded_users", `stick_table bounded_users {
			on {header.X-User}
			first_choice hash {
				balance_factor 125
			}
		}`, "", ""))); err != nil {
		t.Fatal(err)
	}
	where, load := count(port, prefix)
	for b, n := range load {
		if n > 13 {
			t.Errorf("%s holds %d of %d users with balance_factor 125 (limit 13; plain rendezvous put up to %d on one)", b, n, users, plainMax)
		}
	}
	t.Logf("%d users on 4 backends: most on one backend %d plain, %v with balance_factor 125", users, plainMax, load)
	for u, b := range where {
		if got := as(t, port, u, "").Body; got != b {
			t.Errorf("%s moved from %s to %s", u, b, got)
		}
	}
}
