package sticky

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func TestStatusCaddyfile(t *testing.T) {
	for _, c := range []struct {
		in      string
		want    StatusPage
		wantErr string
	}{
		{in: "sticky_status", want: StatusPage{}},
		{in: "sticky_status {\n actions\n refresh 10s\n}", want: StatusPage{Actions: true, Refresh: caddy.Duration(10 * time.Second)}},
		{in: "sticky_status extra", wantErr: "wrong argument count"},
		{in: "sticky_status {\n refresh 100ms\n}", wantErr: "at least 1s"},
		{in: "sticky_status {\n refresh soon\n}", wantErr: "refresh"},
		{in: "sticky_status {\n actions yes\n}", wantErr: "wrong argument count"},
		{in: "sticky_status {\n action\n}", wantErr: `unknown sticky_status option "action"`},
	} {
		var p StatusPage
		err := p.UnmarshalCaddyfile(caddyfile.NewTestDispenser(c.in))
		switch {
		case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
			t.Errorf("%q: error %v, want %q", c.in, err, c.wantErr)
		case c.wantErr == "" && err != nil:
			t.Errorf("%q: %v", c.in, err)
		case c.wantErr == "" && (p.Actions != c.want.Actions || p.Refresh != c.want.Refresh):
			t.Errorf("%q: %+v, want %+v", c.in, p, c.want)
		}
	}
}

func TestStatusSameOrigin(t *testing.T) {
	for _, c := range []struct {
		hdr map[string]string
		ok  bool
	}{
		{map[string]string{"Sec-Fetch-Site": "same-origin"}, true},
		{map[string]string{"Sec-Fetch-Site": "same-site", "Origin": "http://ops.example:8081"}, false},
		{map[string]string{"Sec-Fetch-Site": "cross-site"}, false},
		{map[string]string{"Sec-Fetch-Site": "none"}, false},
		{map[string]string{"Origin": "http://ops.example:8081"}, true},
		{map[string]string{"Origin": "https://OPS.example:8081"}, true},
		{map[string]string{"Origin": "http://ops.example:8082"}, false},
		{map[string]string{"Origin": "null"}, false},
		{map[string]string{"Referer": "http://ops.example:8081/status?x=1"}, true},
		{map[string]string{"Referer": "http://evil.example/ops.example:8081"}, false},
		{map[string]string{}, false},
	} {
		r := httptest.NewRequest("POST", "http://ops.example:8081/status", nil)
		for k, v := range c.hdr {
			r.Header.Set(k, v)
		}
		if err := sameOrigin(r); (err == nil) != c.ok {
			t.Errorf("%v: err %v, want ok=%v", c.hdr, err, c.ok)
		}
	}
}

func TestStatusWantsJSON(t *testing.T) {
	for accept, want := range map[string]bool{
		"application/json":            true,
		"application/json, */*;q=0.5": true,
		"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8": false,
		"":    false,
		"*/*": false,
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("Accept", accept)
		if got := wantsJSON(r); got != want {
			t.Errorf("Accept %q: JSON %v, want %v", accept, got, want)
		}
	}
}

// TestStatusReadOnly: without actions the page takes no POST, and offers
// no buttons.
func TestStatusReadOnly(t *testing.T) {
	p := &StatusPage{Refresh: caddy.Duration(time.Second)}
	rec := httptest.NewRecorder()
	err := p.ServeHTTP(rec, httptest.NewRequest("POST", "/", strings.NewReader("action=drain&server=a:1")), nil)
	var he caddyhttp.HandlerError
	if !errors.As(err, &he) || he.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST to a read-only page: %v", err)
	}
	rec = httptest.NewRecorder()
	if err := p.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil), nil); err != nil {
		t.Fatal(err)
	}
	body := rec.Body.String()
	if strings.Contains(body, "<form") || strings.Contains(body, `name="token"`) {
		t.Error("a read-only page has forms")
	}
	if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP %q", csp)
	}
	if !strings.Contains(body, `<meta http-equiv="refresh" content="1">`) {
		t.Error("the page does not refresh itself")
	}
}
