package integration

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// loadExample reads an example Caddyfile and moves its fixed ports to free
// ones, so the test never collides with a quick start left running.
func loadExample(t *testing.T, path string, ports ...string) (string, map[string]int) {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	mapped := map[string]int{}
	for _, p := range ports {
		mapped[p] = freePort(t)
	}
	return replacePorts(string(src), mapped), mapped
}

var portRef = regexp.MustCompile(`(:|http_port )(\d+)\b`)

// replacePorts rewrites every port reference of the example (":8080",
// "http_port 8080") found in ports, in one pass, so a new port can never
// be rewritten again by a later replacement.
func replacePorts(text string, ports map[string]int) string {
	return portRef.ReplaceAllStringFunc(text, func(m string) string {
		sub := portRef.FindStringSubmatch(m)
		if p, ok := ports[sub[2]]; ok {
			return fmt.Sprintf("%s%d", sub[1], p)
		}
		return m
	})
}

// TestExamplesAdapt adapts every Caddyfile under examples/; the JSON
// examples are loaded by their own tests.
func TestExamplesAdapt(t *testing.T) {
	files, err := filepath.Glob("../examples/*/*Caddyfile")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples found: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(filepath.Dir(f))+"/"+filepath.Base(f), func(t *testing.T) {
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := adaptErr(string(src)); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
		})
	}
}

// TestQuickstartExample runs the quick start as the README does and checks
// what the README's curl lines promise.
func TestQuickstartExample(t *testing.T) {
	text, ports := loadExample(t, "../examples/quickstart/Caddyfile", "8080", "9001", "9002", "9003", "2019")
	loadCaddy(t, adapt(t, text))
	port := ports["8080"]

	first := curl(t, port, "/", "")
	value, ok := cookieValue(first.SetCookies, "SERVERID")
	if !ok || !strings.HasPrefix(value, "web") {
		t.Fatalf("no SERVERID cookie: %v", first.SetCookies)
	}
	if !strings.HasPrefix(first.Body, value+" answered") {
		t.Fatalf("cookie %s but body %q", value, first.Body)
	}
	if first.Header.Get("Cache-Control") != "private" {
		t.Errorf("nocache: Cache-Control %q", first.Header.Get("Cache-Control"))
	}
	c := newClient(t, port)
	home := c.get(t, "/").Body
	if !strings.HasPrefix(home, "web") {
		t.Fatalf("got %q, want a demo backend's answer", home)
	}
	for i := 0; i < 5; i++ {
		r := c.do(t, "GET", "/", map[string]string{})
		if r.Body != home {
			t.Fatalf("moved from %q to %q", home, r.Body)
		}
		if strings.Contains(r.Body, "SERVERID") {
			t.Fatalf("indirect: the app saw our cookie: %q", r.Body)
		}
	}
	// round_robin spreads new users over all three demo backends
	seen := map[string]bool{}
	for i := 0; i < 6; i++ {
		seen[strings.Fields(curl(t, port, "/", "").Body)[0]] = true
	}
	if len(seen) != 3 {
		t.Errorf("new users reached %d backends, want 3", len(seen))
	}
}

func TestStickTableExample(t *testing.T) {
	text, ports := loadExample(t, "../examples/stick-table/Caddyfile", "8080", "8081", "9101", "9102", "9103", "2019")
	loadCaddy(t, adapt(t, text))
	for i := 0; i < 6; i++ {
		first := curl(t, ports["8080"], "/", "")
		sid, ok := cookieValue(first.SetCookies, "JSESSIONID")
		if !ok || !strings.HasPrefix(first.Body, "web") {
			t.Fatalf("the demo app set no session: %v", first.SetCookies)
		}
		for j := 0; j < 4; j++ {
			if r := curl(t, ports["8080"], "/", "JSESSIONID="+sid); r.Body != first.Body {
				t.Fatalf("session %s from %q went to %q", sid, first.Body, r.Body)
			}
		}
	}
	for _, u := range []string{"alice", "bob", "carol"} {
		a := as(t, ports["8081"], u, "").Body
		if !strings.HasPrefix(a, "web") {
			t.Fatalf("%s got %q, want a demo backend's answer", u, a)
		}
		for j := 0; j < 3; j++ {
			if b := as(t, ports["8081"], u, "").Body; b != a {
				t.Fatalf("%s moved from %q to %q", u, a, b)
			}
		}
	}
	// the admin API the README points at shows both tables
	r, err := http.Get(fmt.Sprintf("http://localhost:%d/sticky/tables", ports["2019"]))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if !strings.Contains(string(body), `"sessions"`) || !strings.Contains(string(body), `"users"`) {
		t.Errorf("admin tables: %s", body)
	}
}

func TestJSONExample(t *testing.T) {
	text, ports := loadExample(t, "../examples/json/sticky.json", "8080", "9201", "9202", "2019")
	loadCaddy(t, []byte(text))
	port := ports["8080"]
	first := curl(t, port, "/", "")
	v, ok := cookieValue(first.SetCookies, "SERVERID")
	if !ok || (v != "a" && v != "b") || !strings.HasSuffix(first.Body, "answered\n") {
		t.Fatalf("cookie %q, %v", v, first.SetCookies)
	}
	for i := 0; i < 4; i++ {
		if r := curl(t, port, "/", "SERVERID="+v); r.Body != first.Body {
			t.Fatalf("cookie %s: %q then %q", v, first.Body, r.Body)
		}
	}
	api := curl(t, port, "/api/x", "")
	if !strings.HasSuffix(api.Body, "answered\n") {
		t.Fatalf("api answered %q", api.Body)
	}
	for i := 0; i < 4; i++ {
		if r := curl(t, port, "/api/x", ""); r.Body != api.Body || r.Status != 200 {
			t.Fatalf("client IP stickiness: %q then %q", api.Body, r.Body)
		}
	}
}

// curl requests http://localhost:<port><path> as the README's curl lines
// do: the Host header is localhost, not 127.0.0.1.
func curl(t *testing.T, port int, path, cookie string) response {
	t.Helper()
	req, err := http.NewRequest("GET", fmt.Sprintf("http://localhost:%d%s", port, path), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return response{Status: res.StatusCode, Body: string(body), Header: res.Header, SetCookies: res.Header.Values("Set-Cookie")}
}
