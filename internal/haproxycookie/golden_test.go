package haproxycookie

import (
	"encoding/json"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// The vectors in testdata/haproxy_vectors.json were observed on a real
// HAProxy (version and configuration are recorded in the file). These tests
// replay them without HAProxy or any network access.

type goldenFile struct {
	HAProxyVersion  string `json:"haproxy_version"`
	Dynamic         []goldenDynamic
	DynamicHostname []struct {
		Key, Host, Resolved, Value string
		Port                       uint16
	} `json:"dynamic_hostname"`
	Dates    []goldenDate
	Requests []goldenRequest
	Prefix   []goldenPrefix
}

type goldenDynamic struct {
	Listen, Key, Server, Addr, Value string
	Port                             uint16
}

type goldenDate struct {
	Unix    int64
	Encoded string
	Source  string
}

type goldenRequest struct {
	Name           string
	Listen         string
	Now            int64
	RequestCookie  []string `json:"request_cookie"`
	SetCookie      []string `json:"set_cookie"`
	BackendServer  string   `json:"backend_server"`
	BackendCookie  []string `json:"backend_cookie"`
	LogCookieFlags string   `json:"log_cookie_flags"`
	MaxIdle        int64    `json:"max_idle"`
	MaxLife        int64    `json:"max_life"`
	Divergence     string
}

type goldenPrefix struct {
	RequestCookie    []string `json:"request_cookie"`
	BackendSetCookie []string `json:"backend_set_cookie"`
	SetCookie        []string `json:"set_cookie"`
	BackendServer    string   `json:"backend_server"`
	BackendCookie    []string `json:"backend_cookie"`
	Divergence       string
}

func loadGolden(t *testing.T) goldenFile {
	t.Helper()
	b, err := os.ReadFile("testdata/haproxy_vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var g goldenFile
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(g.HAProxyVersion, "HAProxy version") || len(g.Dynamic) == 0 ||
		len(g.Dates) == 0 || len(g.Requests) == 0 || len(g.Prefix) == 0 {
		t.Fatalf("incomplete golden file: %+v", g)
	}
	return g
}

func TestGoldenDynamic(t *testing.T) {
	g := loadGolden(t)
	var v4, v6 bool
	for _, d := range g.Dynamic {
		addr := netip.MustParseAddr(d.Addr)
		v4 = v4 || addr.Is4()
		v6 = v6 || addr.Is6()
		if got := DynamicValue([]byte(d.Key), addr, d.Port); got != d.Value {
			t.Errorf("%s/%s key %q %s port %d: got %s, HAProxy %s", d.Listen, d.Server, d.Key, d.Addr, d.Port, got, d.Value)
		}
		if got := DynamicValueHost([]byte(d.Key), d.Addr, d.Port); got != d.Value {
			t.Errorf("DynamicValueHost(%q): got %s, HAProxy %s", d.Addr, got, d.Value)
		}
	}
	if !v4 || !v6 {
		t.Fatalf("golden file lacks IPv4 or IPv6 vectors")
	}
	for _, h := range g.DynamicHostname {
		// HAProxy hashes the resolved address, which is what callers get by
		// resolving first; hashing the name itself gives a different value.
		if got := DynamicValue([]byte(h.Key), netip.MustParseAddr(h.Resolved), h.Port); got != h.Value {
			t.Errorf("resolved %s: got %s, HAProxy %s", h.Resolved, got, h.Value)
		}
		if got := DynamicValueHost([]byte(h.Key), h.Host, h.Port); got == h.Value {
			t.Errorf("DynamicValueHost(%q) unexpectedly equals HAProxy's resolved value", h.Host)
		}
	}
}

func TestGoldenDates(t *testing.T) {
	g := loadGolden(t)
	for _, d := range g.Dates {
		at := time.Unix(d.Unix, 0)
		if got := EncodeDate(at); string(got[:]) != d.Encoded {
			t.Errorf("%s: EncodeDate(%d) = %s, HAProxy %s", d.Source, d.Unix, got[:], d.Encoded)
		}
		dec, ok := DecodeDate(d.Encoded)
		if !ok {
			t.Errorf("DecodeDate(%q) failed", d.Encoded)
			continue
		}
		// Within one 4-second step of the request, rounded up; modulo 2^32
		// seconds for the vector taken after the 2106 wrap.
		if diff := secondsBetween(d.Unix, dec.Unix()); diff < 0 || diff > 3 {
			t.Errorf("DecodeDate(%q) = %d, request at %d (diff %d)", d.Encoded, dec.Unix(), d.Unix, diff)
		}
	}
	// Every freshly written last-seen date in the recorded responses decodes
	// to the request time.
	n := 0
	for _, r := range g.Requests {
		for _, sc := range r.SetCookie {
			v, _, _ := strings.Cut(strings.TrimPrefix(sc, "SRV="), ";")
			_, dates, ok := strings.Cut(v, "|")
			if !ok {
				continue
			}
			dec, ok := DecodeDate(dates[:DateLen])
			if !ok {
				t.Errorf("%s: bad date in %q", r.Name, sc)
				continue
			}
			if diff := secondsBetween(r.Now, dec.Unix()); diff < 0 || diff > 3 {
				t.Errorf("%s: last seen %d, request at %d", r.Name, dec.Unix(), r.Now)
			}
			n++
		}
	}
	if n < 10 {
		t.Fatalf("only %d fresh dates checked", n)
	}
}

// TestGoldenRequests replays every recorded request: cookie lookup, parsing,
// date checks, the decision to (re)issue a cookie, the exact Set-Cookie
// value and what the application receives in indirect mode.
func TestGoldenRequests(t *testing.T) {
	g := loadGolden(t)
	known := map[string]bool{"s1": true, "s2": true}
	for _, r := range g.Requests {
		t.Run(r.Name, func(t *testing.T) {
			now := time.Unix(r.Now, 0)
			maxIdle := time.Duration(r.MaxIdle) * time.Second
			maxLife := time.Duration(r.MaxLife) * time.Second

			raw, found := FindCookie(r.RequestCookie, "SRV")
			var p Parsed
			var parsed bool
			if found {
				p, parsed = Parse(raw)
			}
			verdict, refresh := Valid, true
			if parsed {
				verdict, refresh = Check(p, now, maxIdle, maxLife)
			}
			var app []string
			for _, h := range r.RequestCookie {
				if nv, _ := RemoveCookie(h, "SRV"); nv != "" {
					app = append(app, nv)
				}
			}

			if r.Divergence != "" {
				checkDivergence(t, r, parsed, p, verdict, refresh, app)
				return
			}

			usable := parsed && verdict == Valid && known[p.Server]
			switch c := r.LogCookieFlags[0]; c {
			case 'N':
				if found {
					t.Fatalf("found cookie %q, HAProxy saw none", raw)
				}
			case 'V':
				if !usable || p.Server != r.BackendServer {
					t.Fatalf("HAProxy used the cookie for %s; we: parsed=%v %+v %v", r.BackendServer, parsed, p, verdict)
				}
			case 'E':
				if !parsed || (verdict != ExpiredIdle && verdict != FutureDated) {
					t.Fatalf("HAProxy: expired (maxidle); we: parsed=%v %v", parsed, verdict)
				}
			case 'O':
				if !parsed || (verdict != ExpiredLife && verdict != FutureDated) {
					t.Fatalf("HAProxy: too old (maxlife); we: parsed=%v %v", parsed, verdict)
				}
			case 'I':
				if usable {
					t.Fatalf("HAProxy: invalid cookie; we would use %+v", p)
				}
			default:
				t.Fatalf("unexpected log flag %q", c)
			}
			if strings.Contains(r.Name, "future-24h+4") && verdict != FutureDated {
				t.Errorf("verdict %v, want %v", verdict, FutureDated)
			}

			var want []string
			switch r.LogCookieFlags[1] {
			case 'N':
				if usable && refresh {
					t.Errorf("we would refresh, HAProxy did not")
				}
			case 'U':
				if !usable || !refresh {
					t.Errorf("HAProxy refreshed; we: usable=%v refresh=%v", usable, refresh)
				}
				fallthrough
			case 'I':
				var prevFirst time.Time
				if parsed && verdict == Valid {
					prevFirst = p.FirstSeen
				}
				want = []string{"SRV=" + string(AppendIssued(nil, r.BackendServer, now, prevFirst, maxIdle, maxLife)) + "; path=/"}
			}
			if !slices.Equal(want, r.SetCookie) {
				t.Errorf("Set-Cookie: we %q, HAProxy %q", want, r.SetCookie)
			}
			if !slices.Equal(app, r.BackendCookie) {
				t.Errorf("application sees %q, with HAProxy %q", app, r.BackendCookie)
			}
		})
	}
}

// checkDivergence pins down the documented differences from HAProxy so that
// they stay deliberate.
func checkDivergence(t *testing.T, r goldenRequest, parsed bool, p Parsed, v Verdict, refresh bool, app []string) {
	t.Helper()
	t.Logf("documented divergence: %s", r.Divergence)
	switch {
	case strings.HasPrefix(r.Name, "both/lenient-"):
		if parsed {
			t.Errorf("Parse accepted a malformed value: %+v", p)
		}
	case r.Name == "both/quoted":
		if !parsed || p.Server != "s2" || v != Valid {
			t.Errorf("quoted value: %v %+v %v", parsed, p, v)
		}
	case r.Name == "indirect/9":
		if parsed || !slices.Equal(app, r.BackendCookie) {
			t.Errorf("parsed=%v %+v, application sees %q", parsed, p, app)
		}
	case r.Name == "indirect/11":
		if !slices.Equal(app, r.RequestCookie) {
			t.Errorf("comma-separated header changed: %q", app)
		}
	case r.Name == "indirect/13":
		if want := []string{"$Version=1; $Path=/; b=2"}; !slices.Equal(app, want) {
			t.Errorf("got %q, want %q", app, want)
		}
	case strings.HasPrefix(r.Name, "faketime/"):
		if !parsed || v != Valid || refresh {
			t.Errorf("replay in the same second: %v %v refresh=%v", parsed, v, refresh)
		}
	default:
		t.Fatalf("unhandled divergence %q", r.Name)
	}
}

func TestGoldenPrefix(t *testing.T) {
	g := loadGolden(t)
	const name = "JSESSIONID"
	for i, r := range g.Prefix {
		// Request side: routing and what the application receives.
		if raw, found := FindCookie(r.RequestCookie, name); found {
			if srv, _, ok := SplitPrefix(raw); ok && (srv == "s1" || srv == "s2") && srv != r.BackendServer && r.Divergence == "" {
				t.Errorf("#%d: cookie names %s, HAProxy went to %s", i, srv, r.BackendServer)
			}
		}
		var app []string
		for _, h := range r.RequestCookie {
			nv, _ := RewritePrefixedCookie(h, name)
			app = append(app, nv)
		}
		if r.Divergence != "" {
			t.Logf("#%d documented divergence: %s", i, r.Divergence)
			if want := []string{`JSESSIONID="abc"`}; !slices.Equal(app, want) {
				t.Errorf("#%d: got %q, want %q", i, app, want)
			}
		} else if !slices.Equal(app, r.BackendCookie) {
			t.Errorf("#%d: application sees %q, with HAProxy %q", i, app, r.BackendCookie)
		}

		// Response side: the application's cookie gets the server prefix.
		var out []string
		for _, sc := range r.BackendSetCookie {
			nv, _ := PrefixSetCookie(sc, name, r.BackendServer)
			out = append(out, nv)
		}
		if len(r.BackendSetCookie) > 0 && !slices.Equal(out, r.SetCookie) {
			t.Errorf("#%d: Set-Cookie we %q, HAProxy %q", i, out, r.SetCookie)
		}
	}
}
