package integration

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// headerReq sends one request carrying the persistence header (when v is
// not empty), with no cookie jar, as an API client does.
func headerReq(t *testing.T, port int, name, v string) response {
	t.Helper()
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/", port), nil)
	if v != "" {
		req.Header.Set(name, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return response{Status: res.StatusCode, Body: string(body), Header: res.Header, SetCookies: res.Header.Values("Set-Cookie")}
}

// Issue 13: sticky_cookie with `header` carries the value in a header for
// clients without cookies; indirect hides it from the application; forged
// and oversized values are treated as absent.
func TestHeaderCarrierThroughCaddy(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	record := func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("X-Sticky-Server"))
		mu.Unlock()
		_, _ = io.WriteString(w, "ok")
	}
	var bs []*backend
	for i := 1; i <= 3; i++ {
		bs = append(bs, startBackend(t, fmt.Sprintf("web%d", i), record))
	}
	port := stickySite(t, bs, `sticky_cookie HDR {
			header X-Sticky-Server
			indirect
			maxidle 30m
			fallback round_robin
		}`, "")
	for u := 0; u < 3; u++ {
		first := headerReq(t, port, "X-Sticky-Server", "")
		v := first.Header.Get("X-Sticky-Server")
		if v == "" || len(first.SetCookies) != 0 {
			t.Fatalf("first response: header %q, cookies %v", v, first.SetCookies)
		}
		server := first.Header.Get("X-Backend")
		for i := 0; i < 4; i++ {
			r := headerReq(t, port, "X-Sticky-Server", v)
			if r.Header.Get("X-Backend") != server || r.Header.Get("X-Outcome") != "hit" {
				t.Fatalf("value %s went to %s (%s), first answer from %s", v, r.Header.Get("X-Backend"), r.Header.Get("X-Outcome"), server)
			}
			if r.Header.Get("X-Sticky-Server") != "" {
				t.Errorf("a valid value was re-issued: %q", r.Header.Get("X-Sticky-Server"))
			}
		}
	}
	mu.Lock()
	got := append([]string(nil), seen...)
	mu.Unlock()
	if len(got) != 15 {
		t.Errorf("the backends saw %d requests, want 15", len(got))
	}
	for _, s := range got {
		if s != "" {
			t.Fatalf("indirect: the application saw X-Sticky-Server %q", s)
		}
	}
	for _, bad := range []string{"forged", strings.Repeat("a", 6000), "web1|AAAAA|"} {
		r := headerReq(t, port, "X-Sticky-Server", bad)
		if r.Status != 200 || r.Header.Get("X-Outcome") != "invalid" || r.Header.Get("X-Sticky-Server") == "" {
			t.Errorf("value %.20q: %d, outcome %q, issued %q", bad, r.Status, r.Header.Get("X-Outcome"), r.Header.Get("X-Sticky-Server"))
		}
	}
}

// A Caddyfile that mixes header with a cookie-only option fails to load,
// naming the line.
func TestHeaderCarrierRefusesCookieOptionsAtLoad(t *testing.T) {
	_, err := adaptErr(`http://127.0.0.1:1 {
	reverse_proxy 127.0.0.1:2 {
		lb_policy sticky_cookie SRV {
			header X-Sticky-Server
			samesite lax
		}
	}
}
`)
	if err == nil || !strings.Contains(err.Error(), "Caddyfile:5") || !strings.Contains(err.Error(), "samesite") {
		t.Errorf("error %v, want one naming samesite and Caddyfile:5", err)
	}
}
