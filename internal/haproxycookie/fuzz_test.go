package haproxycookie

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"s1", "s1|awcW1", "s1|awcW1|awcVx", "s1|AAAAA|awcVx", "", `"s1"`, "s1|", "s1||awcW1",
		"|", "s1|awcW1|awcVx|", "sé|awcW1", "s1|/////|+++++", "20d1e6c669ae75a9",
		strings.Repeat("x", 8192),
	} {
		f.Add(s, uint32(448906677), uint32(448906600), uint8(3))
	}
	f.Fuzz(func(t *testing.T, raw string, lastQ, firstQ uint32, mode uint8) {
		p, ok := Parse(raw)
		if ok {
			if p.Server == "" || !strings.HasPrefix(raw, p.Server) || strings.ContainsRune(p.Server, DateDelim) || len(raw) > MaxValueLen {
				t.Fatalf("Parse(%q) = %+v", raw, p)
			}
			for _, d := range []time.Time{p.LastSeen, p.FirstSeen} {
				if !d.IsZero() && (d.Unix()%4 != 0 || d.Unix() < 4 || d.Unix() > date30Mask*4 || d.Location() != time.UTC) {
					t.Fatalf("Parse(%q): bad date %v", raw, d)
				}
			}
			// The value is canonical: writing it back gives the input,
			// except when a zero date was read as absent.
			hasL, hasF := !p.LastSeen.IsZero(), !p.FirstSeen.IsZero()
			n := 0
			if hasL {
				n++
			}
			if hasF {
				n++
			}
			if strings.Count(raw, "|") == n && (hasL || !hasF) {
				if got := string(AppendValue(nil, p.Server, p.LastSeen, p.FirstSeen, hasL, hasF)); got != raw {
					t.Fatalf("Parse(%q) re-encodes to %q", raw, got)
				}
			}
			v, _ := Check(p, time.Unix(int64(lastQ)*4, 0), time.Duration(firstQ)*time.Second, time.Duration(mode)*time.Minute)
			if v > FutureDated {
				t.Fatalf("verdict %d", v)
			}
		}

		// parse(encode(x)) == x, with a server value derived from raw.
		server := strings.Map(func(r rune) rune {
			if r < 0x80 && isCookieOctet(byte(r)) && r != DateDelim {
				return r
			}
			return -1
		}, raw)
		if len(server) > 64 {
			server = server[:64]
		}
		if server == "" {
			server = "s"
		}
		last := time.Unix(int64(lastQ&date30Mask)<<2, 0)
		first := time.Unix(int64(firstQ&date30Mask)<<2, 0)
		withLast, withFirst := mode&1 != 0, mode&2 != 0
		enc := string(AppendValue(nil, server, last, first, withLast, withFirst))
		q, ok := Parse(enc)
		if !ok || q.Server != server {
			t.Fatalf("Parse(%q) = %+v, %v; want server %q", enc, q, ok, server)
		}
		var wantLast, wantFirst time.Time
		if (withLast || withFirst) && lastQ&date30Mask != 0 {
			wantLast = last
		}
		if withFirst && firstQ&date30Mask != 0 {
			wantFirst = first
		}
		if !q.LastSeen.Equal(wantLast) || !q.FirstSeen.Equal(wantFirst) {
			t.Fatalf("Parse(%q) = %+v; want last %v first %v", enc, q, wantLast, wantFirst)
		}
	})
}

// cookiePairs returns the cookies net/http reads from a header, without the
// ones called name.
func cookiePairs(header, name string) []string {
	r := &http.Request{Header: http.Header{"Cookie": {header}}}
	var out []string
	for _, c := range r.Cookies() {
		if c.Name != name {
			out = append(out, c.Name+"="+c.Value)
		}
	}
	return out
}

func FuzzFindCookie(f *testing.F) {
	for _, h := range []string{
		"SRV=s1", "a=1; SRV=s1; b=2", `SRV="s1|awcW1"`, "SRV=sé; SRV=s2", "SRV", "SRV = s1",
		"a=1, SRV=s1", " ; ;SRV=s1~app;", `JSESSIONID="s2~abc"`, "SRV=" + strings.Repeat("x", 5000) + "; SRV=y",
	} {
		f.Add(h, "SRV")
		f.Add(h, "JSESSIONID")
	}
	f.Fuzz(func(t *testing.T, header, name string) {
		v, found := FindCookie([]string{header}, name)
		if found && (!strings.Contains(header, v) || len(v) > MaxValueLen) {
			t.Fatalf("FindCookie(%q, %q) = %q", header, name, v)
		}
		// Differential check against net/http, within its cookie count
		// limit and our value cap.
		comparable := isToken(name) && strings.Count(header, ";") < 3000
		if comparable {
			rv, rfound := netHTTPCookie([]string{header}, name)
			if !(rfound && len(rv) > MaxValueLen) && (rv != v || rfound != found) {
				t.Fatalf("FindCookie(%q, %q) = %q, %v; net/http %q, %v", header, name, v, found, rv, rfound)
			}
		}

		if _, _, removed := keptRun(header, name); isToken(name) && removed != hasCookieNamed(header, name) {
			t.Fatalf("keptRun(%q, %q): removed %v", header, name, removed)
		}
		if v, run, removed := keptRun(header, name); removed && run && v != joinKept(header, name) {
			t.Fatalf("keptRun(%q, %q) = %q, joined %q", header, name, v, joinKept(header, name))
		}
		nv, changed := RemoveCookie(header, name)
		if !changed && nv != header {
			t.Fatalf("RemoveCookie(%q) changed the value without saying so: %q", header, nv)
		}
		if _, still := FindCookie([]string{nv}, name); still && isToken(name) {
			t.Fatalf("RemoveCookie(%q, %q) = %q still holds the cookie", header, name, nv)
		}
		if comparable && !slices.Equal(cookiePairs(header, name), cookiePairs(nv, name)) {
			t.Fatalf("RemoveCookie(%q, %q) = %q altered other cookies", header, name, nv)
		}

		pv, changed := RewritePrefixedCookie(header, name)
		if !changed && pv != header || changed && len(pv) >= len(header) {
			t.Fatalf("RewritePrefixedCookie(%q, %q) = %q, %v", header, name, pv, changed)
		}
		if comparable && !slices.Equal(cookiePairs(header, name), cookiePairs(pv, name)) {
			t.Fatalf("RewritePrefixedCookie(%q, %q) = %q altered other cookies", header, name, pv)
		}
		if changed && comparable && countNamed(header, name) == 1 {
			// The occurrence loses exactly the prefix SplitPrefix sees.
			if raw, ok := FindCookie([]string{header}, name); ok {
				if _, app, split := SplitPrefix(raw); split {
					if got, _ := FindCookie([]string{pv}, name); got != app {
						t.Fatalf("RewritePrefixedCookie(%q) = %q: value %q, want %q", header, pv, got, app)
					}
				}
			}
		}

		// Set-Cookie helpers never panic and only touch the named cookie.
		if out, ok := PrefixSetCookie(header, name, "s1"); ok != (SetCookieName(header) == name && name != "") || (!ok && out != header) {
			t.Fatalf("PrefixSetCookie(%q, %q) = %q, %v", header, name, out, ok)
		}
		if out, ok := RewriteSetCookie(header, name, "v"); !ok && out != header {
			t.Fatalf("RewriteSetCookie(%q, %q) = %q", header, name, out)
		}
	})
}

// countNamed counts the pairs called name, whatever their values.
func countNamed(header, name string) int {
	n := 0
	for _, part := range strings.Split(header, ";") {
		if part = trimOWS(part); part == "" {
			continue
		}
		if pn, _ := pairName(part); pn == name {
			n++
		}
	}
	return n
}
