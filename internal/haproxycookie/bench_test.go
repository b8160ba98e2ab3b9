package haproxycookie

import (
	"net/netip"
	"testing"
	"time"
)

// A realistic request: analytics and session cookies around ours.
var benchHeaders = []string{
	"_ga=GA1.2.1234567890.1700000000; _gid=GA1.2.987654321.1700000000; " +
		"session=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N; " +
		"SRV=20d1e6c669ae75a9|awcW1|awcVx; theme=dark; lang=en-GB",
}

// The hot-path functions must not allocate. Skipped under the race detector,
// which adds allocations of its own.
func TestZeroAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("race detector allocates")
	}
	now := time.Unix(1795626880, 0)
	key := []byte("MYKEY")
	addr := netip.MustParseAddr("127.0.0.1")
	buf := make([]byte, 0, 64)
	for name, fn := range map[string]func(){
		"FindCookie": func() { FindCookie(benchHeaders, "SRV") },
		"Parse":      func() { Parse("20d1e6c669ae75a9|awcW1|awcVx") },
		"Check": func() {
			p, _ := Parse("20d1e6c669ae75a9|awcW1|awcVx")
			Check(p, now, 30*time.Minute, 8*time.Hour)
		},
		"SplitPrefix":           func() { SplitPrefix("s1~abc") },
		"RemoveCookieUnchanged": func() { RemoveCookie("a=1; b=2; c=3", "SRV") },
		"RewritePrefixedCookieUnchanged": func() {
			RewritePrefixedCookie("a=1; JSESSIONID=abc", "JSESSIONID")
		},
		"AppendIssued":       func() { AppendIssued(buf[:0], "s1", now, time.Time{}, time.Minute, time.Hour) },
		"AppendDynamicValue": func() { AppendDynamicValue(buf[:0], key, addr, 18101) },
		"Equal":              func() { Equal("20d1e6c669ae75a9", "20d1e6c669ae75a8") },
		"SetCookieName":      func() { SetCookieName("JSESSIONID=abc; Path=/; HttpOnly") },
	} {
		if n := testing.AllocsPerRun(100, fn); n != 0 {
			t.Errorf("%s: %v allocations per run", name, n)
		}
	}
}

func BenchmarkParse(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := Parse("20d1e6c669ae75a9|awcW1|awcVx"); !ok {
			b.Fatal("parse failed")
		}
	}
}

func BenchmarkFindCookie(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := FindCookie(benchHeaders, "SRV"); !ok {
			b.Fatal("not found")
		}
	}
}

func BenchmarkFindParseCheck(b *testing.B) {
	now := time.Unix(1795626880, 0)
	b.ReportAllocs()
	for b.Loop() {
		v, _ := FindCookie(benchHeaders, "SRV")
		p, _ := Parse(v)
		Check(p, now, 30*time.Minute, 8*time.Hour)
	}
}

func BenchmarkRemoveCookie(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		RemoveCookie(benchHeaders[0], "SRV")
	}
}

func BenchmarkAppendDynamicValue(b *testing.B) {
	key := []byte("MYKEY")
	addr := netip.MustParseAddr("127.0.0.1")
	buf := make([]byte, 0, DynamicValueLen)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendDynamicValue(buf[:0], key, addr, 18101)
	}
}
