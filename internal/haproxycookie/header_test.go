package haproxycookie

import (
	"net/http"
	"strings"
	"testing"
)

// netHTTPCookie is the reference: what net/http's Request.Cookie returns.
func netHTTPCookie(headers []string, name string) (string, bool) {
	r := &http.Request{Header: http.Header{"Cookie": headers}}
	c, err := r.Cookie(name)
	if err != nil {
		return "", false
	}
	return c.Value, true
}

var cookieHeaderCases = []struct {
	headers []string
	value   string
	found   bool
}{
	{nil, "", false},
	{[]string{""}, "", false},
	{[]string{"SRV=s1"}, "s1", true},
	{[]string{"a=1; SRV=s1; b=2"}, "s1", true},
	{[]string{"a=1;SRV=s1;b=2"}, "s1", true},
	{[]string{"  SRV=s1  "}, "s1", true},
	{[]string{"\tSRV=s1\t;"}, "s1", true},
	{[]string{"a=1", "SRV=s2"}, "s2", true},
	{[]string{"SRV=s1; SRV=s2"}, "s1", true},       // first wins
	{[]string{"SRV=s1", "SRV=s2"}, "s1", true},     // first header wins
	{[]string{`SRV="s1|awcW1"`}, "s1|awcW1", true}, // quotes stripped
	{[]string{`SRV=""`}, "", true},                 // empty quoted
	{[]string{`SRV="`}, "", false},                 // lone quote invalid
	{[]string{`SRV="s1`}, "", false},               // unbalanced
	{[]string{`SRV=s"1`}, "", false},               // inner quote
	{[]string{`SRV=s\1`}, "", false},               // backslash
	{[]string{"SRV=sé"}, "", false},                // non-ASCII
	{[]string{"SRV=s\x01"}, "", false},             // control
	{[]string{"SRV=s\x7f"}, "", false},             // DEL
	{[]string{"SRV=sé; SRV=s2"}, "s2", true},       // invalid skipped, scanning goes on
	{[]string{"SRV"}, "", true},                    // no '=': empty value
	{[]string{"SRV="}, "", true},                   // empty value
	{[]string{"SRV = s1"}, " s1", true},            // space kept in the value
	{[]string{"SRV=s 1"}, "s 1", true},             // inner space allowed by net/http
	{[]string{"srv=s1"}, "", false},                // names are case-sensitive
	{[]string{"SRVX=s1; XSRV=s2"}, "", false},      // no prefix/suffix match
	{[]string{"a=1, SRV=s1"}, "", false},           // commas do not separate
	{[]string{"SRV=a=b"}, "a=b", true},             // split at the first '='
	{[]string{"SRV=s1~app"}, "s1~app", true},       // prefix mode value
	{[]string{";;; ; SRV=s1 ;;"}, "s1", true},      // empty pairs
	{[]string{"=x; SRV=s1"}, "s1", true},           // empty name ignored
	{[]string{"S RV=s1"}, "", false},               // not our name
	{[]string{"SRV=s1\r\n"}, "s1", true},           // CR LF trimmed
	{[]string{"SRV=" + strings.Repeat("x", MaxValueLen)}, strings.Repeat("x", MaxValueLen), true},
}

func TestFindCookie(t *testing.T) {
	for _, c := range cookieHeaderCases {
		v, found := FindCookie(c.headers, "SRV")
		if v != c.value || found != c.found {
			t.Errorf("FindCookie(%q) = %q, %v; want %q, %v", c.headers, v, found, c.value, c.found)
		}
		// Same answer as net/http.
		rv, rfound := netHTTPCookie(c.headers, "SRV")
		if rv != v || rfound != found {
			t.Errorf("FindCookie(%q) = %q, %v; net/http %q, %v", c.headers, v, found, rv, rfound)
		}
	}
}

func TestFindCookieCap(t *testing.T) {
	big := "SRV=" + strings.Repeat("x", MaxValueLen+1)
	if v, found := FindCookie([]string{big}, "SRV"); found {
		t.Errorf("oversized value found (%d bytes)", len(v))
	}
	if v, found := FindCookie([]string{big + "; SRV=s1"}, "SRV"); v != "s1" || !found {
		t.Errorf("after oversized value: %q, %v", v, found)
	}
	huge := "a=" + strings.Repeat("y", 8192) + "; SRV=s1"
	if v, found := FindCookie([]string{huge}, "SRV"); v != "s1" || !found {
		t.Errorf("8 KiB neighbour: %q, %v", v, found)
	}
}

func TestFindCookieBadName(t *testing.T) {
	for _, name := range []string{"", "S V", "S;V", "SRV=", "é"} {
		if v, found := FindCookie([]string{name + "=x; " + name + "x"}, name); found {
			t.Errorf("FindCookie(name %q) = %q", name, v)
		}
	}
}

func TestRemoveCookie(t *testing.T) {
	for _, c := range []struct {
		in, want string
		changed  bool
	}{
		{"", "", false},
		{"a=1; b=2", "a=1; b=2", false},
		{"a=1;b=2", "a=1;b=2", false}, // untouched when absent
		{"SRV=s1", "", true},
		{"SRV=s1; b=2", "b=2", true},
		{"a=1; SRV=s1", "a=1", true},
		{"a=1; SRV=s1; b=2", "a=1; b=2", true},
		{"a=1;SRV=s1;b=2", "a=1; b=2", true},
		{"a=1;  SRV=s1  ;  b=2", "a=1; b=2", true},
		{"a=1; SRV=s1; SRV=s2; b=2", "a=1; b=2", true},
		{"SRV=s1; SRV=s2", "", true},
		{"a=1; SRV = s1; b=2", "a=1; b=2", true},
		{"a=1; SRV; b=2", "a=1; b=2", true},                // bare name
		{`a=1; SRV="s1"; b=2`, "a=1; b=2", true},           // quoted
		{"a=1; SRV=sé; b=2", "a=1; b=2", true},             // removed even when invalid
		{"a=\"x y\"; SRV=s1;;b=é", "a=\"x y\"; b=é", true}, // others byte for byte
		{"SRVX=1; SRV=s1; XSRV=2", "SRVX=1; XSRV=2", true},
		{" ; SRV=s1 ; ", "", true},
		{"a=1, SRV=s1", "a=1, SRV=s1", false}, // commas are not separators
	} {
		got, changed := RemoveCookie(c.in, "SRV")
		if got != c.want || changed != c.changed {
			t.Errorf("RemoveCookie(%q) = %q, %v; want %q, %v", c.in, got, changed, c.want, c.changed)
		}
		if _, found := FindCookie([]string{got}, "SRV"); found {
			t.Errorf("RemoveCookie(%q) left the cookie: %q", c.in, got)
		}
	}
	if got, changed := RemoveCookie("a=1; =x", ""); got != "a=1; =x" || changed {
		t.Errorf("empty name: %q, %v", got, changed)
	}
}

func TestRewritePrefixedCookie(t *testing.T) {
	const n = "JSESSIONID"
	for _, c := range []struct {
		in, want string
		changed  bool
	}{
		{"", "", false},
		{"JSESSIONID=abc", "JSESSIONID=abc", false},
		{"JSESSIONID=s1~abc", "JSESSIONID=abc", true},
		{"JSESSIONID=s1~", "JSESSIONID=", true},
		{"JSESSIONID=~abc", "JSESSIONID=abc", true},
		{"JSESSIONID=s1~a~b", "JSESSIONID=a~b", true},
		{"x=1; JSESSIONID=s1~abc; y=2", "x=1; JSESSIONID=abc; y=2", true},
		{"x=1;JSESSIONID=s1~abc;y=s1~z", "x=1;JSESSIONID=abc;y=s1~z", true},
		{"JSESSIONID=s2~a; JSESSIONID=s1~b", "JSESSIONID=a; JSESSIONID=b", true},
		{`JSESSIONID="s2~abc"`, `JSESSIONID="abc"`, true},
		{"JSESSIONID= s2~abc ", "JSESSIONID=abc ", true},
		{" JSESSIONID = s2~abc", " JSESSIONID =abc", true},
		{"JSESSIONIDX=s1~abc; XJSESSIONID=s1~abc", "JSESSIONIDX=s1~abc; XJSESSIONID=s1~abc", false},
		{"JSESSIONID", "JSESSIONID", false},
		{"a=s1~b, JSESSIONID=s1~c", "a=s1~b, JSESSIONID=s1~c", false},
	} {
		got, changed := RewritePrefixedCookie(c.in, n)
		if got != c.want || changed != c.changed {
			t.Errorf("RewritePrefixedCookie(%q) = %q, %v; want %q, %v", c.in, got, changed, c.want, c.changed)
		}
	}
	if got, changed := RewritePrefixedCookie("=s1~x", ""); got != "=s1~x" || changed {
		t.Errorf("empty name: %q, %v", got, changed)
	}
}

func TestSetCookieHelpers(t *testing.T) {
	for _, c := range []struct {
		in, name, prefixed, rewritten string
	}{
		{"JSESSIONID=abc; Path=/", "JSESSIONID", "JSESSIONID=s1~abc; Path=/", "JSESSIONID=NEW; Path=/"},
		{"JSESSIONID=abc", "JSESSIONID", "JSESSIONID=s1~abc", "JSESSIONID=NEW"},
		{"JSESSIONID=; Path=/", "JSESSIONID", "JSESSIONID=s1~; Path=/", "JSESSIONID=NEW; Path=/"},
		{`JSESSIONID="q"; Path=/`, "JSESSIONID", `JSESSIONID=s1~"q"; Path=/`, "JSESSIONID=NEW; Path=/"},
		{" JSESSIONID = abc ; Secure", "JSESSIONID", " JSESSIONID = s1~abc ; Secure", " JSESSIONID = NEW ; Secure"},
		{"JSESSIONID=a=b; Expires=Thu, 01-Jan-1970 00:00:01 GMT", "JSESSIONID", "JSESSIONID=s1~a=b; Expires=Thu, 01-Jan-1970 00:00:01 GMT", "JSESSIONID=NEW; Expires=Thu, 01-Jan-1970 00:00:01 GMT"},
		{"OTHER=x; Path=/", "OTHER", "", ""},
		{"JSESSIONID; Path=/", "", "", ""},
		{"J SESSIONID=x", "", "", ""},
		{"", "", "", ""},
	} {
		if got := SetCookieName(c.in); got != c.name {
			t.Errorf("SetCookieName(%q) = %q, want %q", c.in, got, c.name)
		}
		got, changed := PrefixSetCookie(c.in, "JSESSIONID", "s1")
		if want := c.prefixed; (want == "" && (changed || got != c.in)) || (want != "" && (!changed || got != want)) {
			t.Errorf("PrefixSetCookie(%q) = %q, %v; want %q", c.in, got, changed, want)
		}
		got, changed = RewriteSetCookie(c.in, "JSESSIONID", "NEW")
		if want := c.rewritten; (want == "" && (changed || got != c.in)) || (want != "" && (!changed || got != want)) {
			t.Errorf("RewriteSetCookie(%q) = %q, %v; want %q", c.in, got, changed, want)
		}
	}
}

// ScanCookie agrees with FindCookie on every case, and reports a cookie that
// is there but malformed or oversized as Unusable rather than Absent.
func TestScanCookie(t *testing.T) {
	for _, c := range cookieHeaderCases {
		v, p := ScanCookie(c.headers, "SRV")
		if (p == Present) != c.found || v != c.value {
			t.Errorf("ScanCookie(%q) = %q, %v; FindCookie says %q, %v", c.headers, v, p, c.value, c.found)
		}
	}
	for headers, want := range map[string]Presence{
		"a=1":                              Absent,
		"SRV=sé":                           Unusable,
		`SRV="s1`:                          Unusable,
		"SRV=" + strings.Repeat("x", 5000): Unusable,
		"SRV=sé; SRV=s2":                   Present,
		`SRV=""`:                           Present,
	} {
		if _, p := ScanCookie([]string{headers}, "SRV"); p != want {
			t.Errorf("ScanCookie(%.30q) = %v, want %v", headers, p, want)
		}
	}
}

// RemoveCookie returns a substring of the header when the pairs it keeps
// are one run separated by "; " (no allocation), and otherwise builds the
// same result as joining the kept pairs.
func TestRemoveCookieKeptRun(t *testing.T) {
	for _, c := range []struct {
		in, want string
		run      bool
	}{
		{"SRV=a", "", true},
		{"SRV=a; b=2; c=3", "b=2; c=3", true},
		{"b=2; c=3; SRV=a", "b=2; c=3", true},
		{" b=2; SRV=a ;", "b=2", true},
		{"b=2; SRV=a; c=3", "b=2; c=3", false},
		{"b=2;c=3; SRV=a", "b=2; c=3", false},
		{"b=2; ; c=3; SRV=a", "b=2; c=3", false},
		{"SRV; b=2", "b=2", true},
	} {
		got, changed := RemoveCookie(c.in, "SRV")
		if got != c.want || !changed {
			t.Errorf("RemoveCookie(%q) = %q, %v; want %q", c.in, got, changed, c.want)
		}
		if _, run, _ := keptRun(c.in, "SRV"); run != c.run {
			t.Errorf("keptRun(%q): run %v, want %v", c.in, run, c.run)
		}
		if c.run {
			if n := testing.AllocsPerRun(10, func() { RemoveCookie(c.in, "SRV") }); n != 0 && !raceEnabled {
				t.Errorf("RemoveCookie(%q) allocates %v times", c.in, n)
			}
		}
	}
}

// hasCookieNamed reports whether headerValue contains a pair called name,
// whatever its value: the oracle for keptRun's removed.
func hasCookieNamed(headerValue, name string) bool {
	for rest := headerValue; len(rest) > 0; {
		var part string
		part, rest, _ = strings.Cut(rest, ";")
		if part = trimOWS(part); part == "" {
			continue
		}
		if n, _ := pairName(part); n == name {
			return true
		}
	}
	return false
}
