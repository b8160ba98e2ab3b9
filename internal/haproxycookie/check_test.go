package haproxycookie

import (
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	const now = 1795626880 // a multiple of 4
	const idle, life = 30 * time.Minute, 8 * time.Hour
	const day = 86400
	p := func(last, first int64) Parsed {
		var v Parsed
		v.Server = "s1"
		if last != 0 {
			v.LastSeen = unix(last)
		}
		if first != 0 {
			v.FirstSeen = unix(first)
		}
		return v
	}
	for _, c := range []struct {
		name             string
		p                Parsed
		now              time.Time
		maxIdle, maxLife time.Duration
		want             Verdict
		refresh          bool
	}{
		{"plain", p(0, 0), unix(now), 0, 0, Valid, false},
		{"plain/last-past", p(now-60, 0), unix(now), 0, 0, Valid, true}, // dates get dropped
		{"plain/last-future", p(now+100, 0), unix(now), 0, 0, Valid, false},
		{"plain/first-only", p(0, now-60), unix(now), 0, 0, Valid, true},
		{"plain/future-unchecked", p(now+10*day, now+10*day), unix(now), 0, 0, Valid, true},

		{"idle/no-dates", p(0, 0), unix(now), idle, 0, Valid, true},
		{"idle/current", p(now, 0), unix(now), idle, 0, Valid, false},
		{"idle/current+3", p(now+4, 0), unix(now + 3), idle, 0, Valid, false},
		{"idle/sub-second", p(now, 0), unix(now).Add(999 * time.Millisecond), idle, 0, Valid, false},
		{"idle/1s-late", p(now, 0), unix(now + 1), idle, 0, Valid, true},
		{"idle/exactly-max", p(now-1800, 0), unix(now), idle, 0, Valid, true},
		{"idle/max+1", p(now-1800, 0), unix(now + 1), idle, 0, ExpiredIdle, true},
		{"idle/future-24h", p(now+day, 0), unix(now), idle, 0, Valid, false},
		{"idle/future-24h+1", p(now+day, 0), unix(now - 1), idle, 0, FutureDated, true},
		{"idle/first-dropped", p(now, now-60), unix(now), idle, 0, Valid, true},
		{"idle/first-not-checked", p(now, now-100*day), unix(now), idle, 0, Valid, true},

		{"life/no-dates", p(0, 0), unix(now), 0, life, Valid, true},
		{"life/last-only", p(now, 0), unix(now), 0, life, Valid, true}, // first gets added
		{"life/current", p(now, now-60), unix(now), 0, life, Valid, false},
		{"life/last-past", p(now-8, now-60), unix(now), 0, life, Valid, true},
		{"life/last-future-unchecked", p(now+10*day, now-60), unix(now), 0, life, Valid, false},
		{"life/exactly-max", p(now, now-28800), unix(now), 0, life, Valid, false},
		{"life/max+1", p(now+4, now-28800), unix(now + 1), 0, life, ExpiredLife, true},
		{"life/future-24h", p(now, now+day), unix(now), 0, life, Valid, false},
		{"life/future-24h+4", p(now, now+day+4), unix(now), 0, life, FutureDated, true},

		{"both/fresh", p(now, now-100), unix(now), idle, life, Valid, false},
		{"both/idle", p(now-1804, now-2000), unix(now), idle, life, ExpiredIdle, true},
		{"both/life-first", p(now-1804, now-28804), unix(now), idle, life, ExpiredLife, true},
		{"both/first-future-first", p(now-1804, now+2*day), unix(now), idle, life, FutureDated, true},
		{"both/last-future", p(now+2*day, now), unix(now), idle, life, FutureDated, true},
		{"both/last-only", p(now-20, 0), unix(now), idle, life, Valid, true},
		{"both/first-only", p(0, now-20), unix(now), idle, life, Valid, true},

		{"negative-durations-disable", p(now-10*day, now-10*day), unix(now), -1, -1, Valid, true},
		{"sub-second-maxidle", p(now-4, 0), unix(now), 500 * time.Millisecond, 0, ExpiredIdle, true},
		// After the 30-bit field wraps in 2106 the dates still compare
		// correctly, modulo 2^32 seconds.
		{"wrap", p(4, 0), unix(1<<32 + 2), idle, 0, Valid, false},
		{"wrap/idle", p(4, 0), unix(1<<32 + 4 + 1801), idle, 0, ExpiredIdle, true},
	} {
		v, refresh := Check(c.p, c.now, c.maxIdle, c.maxLife)
		if v != c.want || refresh != c.refresh {
			t.Errorf("%s: Check = %v, %v; want %v, %v", c.name, v, refresh, c.want, c.refresh)
		}
	}
}

func TestVerdictString(t *testing.T) {
	for v, s := range map[Verdict]string{
		Valid: "valid", ExpiredIdle: "expired-idle", ExpiredLife: "expired-life",
		FutureDated: "future-dated", Verdict(99): "unknown",
	} {
		if v.String() != s {
			t.Errorf("%d: %q", v, v.String())
		}
	}
}

// TestRefreshRate shows that a client making a request every second gets a
// new cookie once per 4-second period, not on every response.
func TestRefreshRate(t *testing.T) {
	const idle = 30 * time.Minute
	start := unix(1795626880)
	val := string(AppendIssued(nil, "s1", start, time.Time{}, idle, 0))
	sets := 0
	for s := 1; s <= 40; s++ {
		now := start.Add(time.Duration(s) * time.Second)
		p, ok := Parse(val)
		if !ok {
			t.Fatal(val)
		}
		v, refresh := Check(p, now, idle, 0)
		if v != Valid {
			t.Fatalf("%v at +%ds", v, s)
		}
		if refresh {
			sets++
			val = string(AppendIssued(nil, "s1", now, p.FirstSeen, idle, 0))
		}
	}
	if sets != 10 {
		t.Errorf("%d Set-Cookie in 40 s, want 10", sets)
	}
}
