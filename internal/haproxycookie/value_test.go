package haproxycookie

import (
	"strings"
	"testing"
	"time"
)

func unix(s int64) time.Time { return time.Unix(s, 0).UTC() }

func TestParseValid(t *testing.T) {
	for _, c := range []struct {
		raw         string
		server      string
		last, first int64 // 0 = absent
	}{
		{"s1", "s1", 0, 0},
		{"20d1e6c669ae75a9", "20d1e6c669ae75a9", 0, 0},
		{"s1|awcW1", "s1", 1795626708, 0},
		{"s1|awcW1|awcVx", "s1", 1795626708, 1795626436},
		{"s1|AAAAA|awcVx", "s1", 0, 1795626436}, // zero date = absent, as in HAProxy
		{"s1|AAAAA|AAAAA", "s1", 0, 0},
		{"s1|awcW1|AAAAA", "s1", 1795626708, 0},
		{"a~b", "a~b", 0, 0}, // '~' is only special in prefix mode
		{"!#$%&'()*+-./:<=>?@[]^_`{}~", "!#$%&'()*+-./:<=>?@[]^_`{}~", 0, 0},
		{"s1|+/+/+|/////", "s1", ((((62*64+63)*64+62)*64+63)*64 + 62) * 4, (1<<30 - 1) * 4},
		{strings.Repeat("x", MaxValueLen), strings.Repeat("x", MaxValueLen), 0, 0},
	} {
		p, ok := Parse(c.raw)
		if !ok {
			t.Errorf("Parse(%q) failed", c.raw)
			continue
		}
		if p.Server != c.server {
			t.Errorf("Parse(%q).Server = %q, want %q", c.raw, p.Server, c.server)
		}
		checkDate := func(what string, got time.Time, want int64) {
			if want == 0 {
				if !got.IsZero() {
					t.Errorf("Parse(%q).%s = %v, want absent", c.raw, what, got)
				}
				return
			}
			if got.Unix() != want {
				t.Errorf("Parse(%q).%s = %d, want %d", c.raw, what, got.Unix(), want)
			}
		}
		checkDate("LastSeen", p.LastSeen, c.last)
		checkDate("FirstSeen", p.FirstSeen, c.first)
	}
}

func TestParseMalformed(t *testing.T) {
	for _, raw := range []string{
		"",
		`"s1"`,               // quotes are stripped by FindCookie, not here
		`s"1`,                // DQUOTE
		"s 1",                // space
		"s1 ",                // trailing space
		"s,1",                // comma
		"s;1",                // semicolon
		`s\1`,                // backslash
		"s\x001",             // control
		"s\x7f",              // DEL
		"sé",                 // non-ASCII
		"s\xff",              // invalid UTF-8
		"|awcW1",             // empty server
		"|",                  // empty server, empty date
		"s1|",                // '|' without dates
		"s1||",               // two empty dates
		"s1||awcW1",          // empty last seen (HAProxy accepts, never emits)
		"s1|awcW1|",          // empty first seen
		"s1|awcW",            // short date
		"s1|awcW1X",          // long date
		"s1|awcW1|awcW",      // short first
		"s1|awcW1|awcW1X",    // long first
		"s1|awcW!",           // bad base64
		"s1|awcW=",           // padding
		"s1|awc-1",           // URL-safe alphabet
		"s1|awc_1",           // URL-safe alphabet
		"s1|awcW1|awcW!",     // bad first
		"s1|awcW1~awcW1",     // wrong separator
		"s1|awcW1|awcW1|",    // extra separator
		"s1|awcW1|awcW1|abc", // extra field
		"s1|awcW1|awcW1|awcW1",
		"s1|awcW1||awcW1",
		"s1|éwcW1", // non-ASCII in date
		strings.Repeat("x", MaxValueLen+1),
		strings.Repeat("x", 8192),
		"s1|" + strings.Repeat("A", 8192),
	} {
		if p, ok := Parse(raw); ok {
			t.Errorf("Parse(%.40q) = %+v, want failure", raw, p)
		}
	}
}

func TestAppendValue(t *testing.T) {
	last, first := unix(1795626705), unix(1795626436)
	for _, c := range []struct {
		withLast, withFirst bool
		want                string
	}{
		{false, false, "s1"},
		{true, false, "s1|awcW1"},
		{true, true, "s1|awcW1|awcVx"},
		{false, true, "s1|awcW1|awcVx"}, // first implies last
	} {
		got := string(AppendValue([]byte("v="), "s1", last, first, c.withLast, c.withFirst))
		if got != "v="+c.want {
			t.Errorf("AppendValue(%v, %v) = %q, want %q", c.withLast, c.withFirst, got, "v="+c.want)
		}
	}
}

func TestAppendIssued(t *testing.T) {
	now, prev := unix(1795626705), unix(1795626436)
	for _, c := range []struct {
		prevFirst        time.Time
		maxIdle, maxLife time.Duration
		want             string
	}{
		{time.Time{}, 0, 0, "s1"},
		{prev, 0, 0, "s1"},
		{time.Time{}, 30 * time.Minute, 0, "s1|awcW1"},
		{prev, 30 * time.Minute, 0, "s1|awcW1"}, // first seen dropped without maxlife
		{time.Time{}, 0, 8 * time.Hour, "s1|awcW1|awcW1"},
		{time.Time{}, 30 * time.Minute, 8 * time.Hour, "s1|awcW1|awcW1"},
		{prev, 30 * time.Minute, 8 * time.Hour, "s1|awcW1|awcVx"}, // carried over
	} {
		if got := string(AppendIssued(nil, "s1", now, c.prevFirst, c.maxIdle, c.maxLife)); got != c.want {
			t.Errorf("AppendIssued(%v, %v, %v) = %q, want %q", c.prevFirst, c.maxIdle, c.maxLife, got, c.want)
		}
	}
}

func TestValueRoundTrip(t *testing.T) {
	for _, raw := range []string{"s1", "s1|awcW1", "s1|awcW1|awcVx", "s1|/////|AAAAB"} {
		p, ok := Parse(raw)
		if !ok {
			t.Fatalf("Parse(%q) failed", raw)
		}
		got := string(AppendValue(nil, p.Server, p.LastSeen, p.FirstSeen, !p.LastSeen.IsZero(), !p.FirstSeen.IsZero()))
		if got != raw {
			t.Errorf("round trip %q -> %q", raw, got)
		}
	}
}

func TestSplitJoinPrefix(t *testing.T) {
	for _, c := range []struct {
		raw, server, app string
		ok               bool
	}{
		{"s1~abc", "s1", "abc", true},
		{"s1~", "s1", "", true},
		{"~abc", "", "abc", true},
		{"s1~a~b", "s1", "a~b", true},
		{`s1~"q"`, "s1", `"q"`, true},
		{"abc", "abc", "", false},
		{"", "", "", false},
	} {
		s, a, ok := SplitPrefix(c.raw)
		if s != c.server || a != c.app || ok != c.ok {
			t.Errorf("SplitPrefix(%q) = %q, %q, %v", c.raw, s, a, ok)
		}
		if c.ok {
			if j := JoinPrefix(s, a); j != c.raw {
				t.Errorf("JoinPrefix(%q, %q) = %q", s, a, j)
			}
			if j := string(AppendPrefix([]byte("x"), s, a)); j != "x"+c.raw {
				t.Errorf("AppendPrefix = %q", j)
			}
		}
	}
}

func TestEqual(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"", "", true},
		{"20d1e6c669ae75a9", "20d1e6c669ae75a9", true},
		{"20d1e6c669ae75a9", "20d1e6c669ae75a8", false},
		{"20d1e6c669ae75a9", "20d1e6c669ae75a", false},
		{"a", "", false},
		{strings.Repeat("x", 100), strings.Repeat("x", 100), true},
	} {
		if got := Equal(c.a, c.b); got != c.want {
			t.Errorf("Equal(%q, %q) = %v", c.a, c.b, got)
		}
	}
}
