package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// opsSite is a Caddy with its admin API, a table `sessions` keyed by the
// X-User header over three backends, a sticky_cookie route under
// /cookie/, and the status page (with actions) under /status.
type opsSite struct {
	port, adminPort int
	bs              []*backend
}

func startOpsSite(t *testing.T) *opsSite {
	t.Helper()
	s := &opsSite{port: freePort(t), adminPort: freePort(t), bs: startBackends(t, 3)}
	loadCaddy(t, adapt(t, fmt.Sprintf(`{
	admin 127.0.0.1:%d
	auto_https off
	persist_config off
	storage file_system %s
	log {
		level ERROR
	}
	sticky {
		table sessions {
			type string
			size 4096
			expire 30m
		}
	}
}

http://127.0.0.1:%d {
	handle /status* {
		sticky_status {
			actions
			refresh 30s
		}
	}
	handle /cookie/* {
		reverse_proxy %s {
			lb_policy sticky_cookie SRV {
				fallback round_robin
			}
			fail_duration 30s
			lb_retries 2
		}
	}
	handle {
		reverse_proxy %s {
			lb_policy stick_table sessions {
				on {header.X-User}
				fallback round_robin
			}
		}
	}
}
`, s.adminPort, t.TempDir(), s.port, upstreamList(s.bs), upstreamList(s.bs))))
	undrainAllAtEnd(t, s.adminPort)
	return s
}

// users sends one request as each of n users (X-User: prefix-i) and
// returns how many landed on each backend address.
func (s *opsSite) users(t *testing.T, prefix string, n int) map[string]int {
	t.Helper()
	byName := map[string]string{}
	for _, b := range s.bs {
		byName[b.Name] = b.Addr
	}
	out := map[string]int{}
	for i := range n {
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/", s.port), nil)
		req.Header.Set("X-User", prefix+strconv.Itoa(i))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("user %d: %d %s", i, res.StatusCode, b)
		}
		out[byName[string(b)]]++
	}
	return out
}

type apiServer struct {
	Server      string         `json:"server"`
	Stuck       int            `json:"stuck"`
	Drained     bool           `json:"drained"`
	LastNewUser *time.Time     `json:"last_new_user"`
	Tables      map[string]int `json:"tables"`
	Policies    []string       `json:"policies"`
}

type apiServers struct {
	Servers []apiServer `json:"servers"`
	Drained []string    `json:"drained"`
}

func (s *opsSite) servers(t *testing.T) map[string]apiServer {
	t.Helper()
	var res apiServers
	adminJSON(t, s.adminPort, "GET", "/sticky/servers", "", 200, &res)
	out := map[string]apiServer{}
	for _, v := range res.Servers {
		out[v.Server] = v
	}
	return out
}

// scanTable counts the entries of the table per server by listing them
// all through the admin API: the slow way the counters must agree with.
func (s *opsSite) scanTable(t *testing.T, table string) map[string]int {
	t.Helper()
	out := map[string]int{}
	after := ""
	for {
		q := url.Values{"limit": {"1000"}}
		if after != "" {
			q.Set("after", after)
		}
		var page apiPage
		adminJSON(t, s.adminPort, "GET", "/sticky/tables/"+table+"?"+q.Encode(), "", 200, &page)
		for _, e := range page.Entries {
			out[e.Server]++
		}
		if !page.More {
			return out
		}
		after = page.Next
	}
}

func TestServerCountsThroughAdminAPI(t *testing.T) {
	s := startOpsSite(t)
	before := time.Now().Add(-time.Second)
	placed := s.users(t, "u", 60)
	s.users(t, "u", 60) // the same users again: hits, no new entries
	// users of one server leave: their entries are deleted one by one
	var gone []string
	page := apiPage{}
	adminJSON(t, s.adminPort, "GET", "/sticky/tables/sessions?server="+url.QueryEscape(s.bs[0].Addr)+"&limit=5", "", 200, &page)
	for _, e := range page.Entries {
		adminJSON(t, s.adminPort, "DELETE", "/sticky/tables/sessions/entries/"+url.PathEscape(e.Key), "", 200, nil)
		gone = append(gone, e.Key)
	}
	placed[s.bs[0].Addr] -= len(gone)
	// a pin moves one user to another server
	adminJSON(t, s.adminPort, "PUT", "/sticky/tables/sessions/entries/u59", `{"server":"`+s.bs[2].Addr+`"}`, 200, nil)
	scan := s.scanTable(t, "sessions")
	got := s.servers(t)
	total := 0
	for _, b := range s.bs {
		g := got[b.Addr]
		if g.Stuck != scan[b.Addr] || g.Tables["sessions"] != scan[b.Addr] {
			t.Errorf("%s: stuck %d (table %d), a scan of the table finds %d", b.Addr, g.Stuck, g.Tables["sessions"], scan[b.Addr])
		}
		if g.LastNewUser == nil || g.LastNewUser.Before(before) || g.LastNewUser.After(time.Now().Add(time.Second)) {
			t.Errorf("%s: last_new_user %v, want about now", b.Addr, g.LastNewUser)
		}
		total += g.Stuck
	}
	if total != 60-len(gone) {
		t.Errorf("stuck users add up to %d, want %d", total, 60-len(gone))
	}
	if len(gone) != 5 {
		t.Fatalf("deleted %d entries of %s, want 5 (placement %v)", len(gone), s.bs[0].Addr, placed)
	}
	// The CLI prints the same numbers.
	out, err := runStickyCLI(t, "servers", "--address", fmt.Sprintf("127.0.0.1:%d", s.adminPort))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range s.bs {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(b.Addr) + `\s+active\s+` + strconv.Itoa(scan[b.Addr]) + `\s`).MatchString(out) {
			t.Errorf("caddy sticky servers has no row %s active %d:\n%s", b.Addr, scan[b.Addr], out)
		}
	}
	// The gauges say the same.
	metrics := s.metrics(t)
	for _, b := range s.bs {
		want := fmt.Sprintf(`caddy_sticky_server_stuck{server="%s",table="sessions"} %d`, b.Addr, scan[b.Addr])
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// metrics scrapes Caddy's admin /metrics.
func (s *opsSite) metrics(t *testing.T) string {
	t.Helper()
	code, _, b := adminCall(t, s.adminPort, "GET", "/metrics", "")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	return string(b)
}

// TestServersListsCookiePolicyUpstreams: a sticky_cookie policy's
// upstreams appear once it has served a request, with no table entries.
func TestServersListsCookiePolicyUpstreams(t *testing.T) {
	s := startOpsSite(t)
	if r := raw(t, s.port, "GET", "/cookie/x", ""); r.Status != 200 {
		t.Fatalf("cookie route: %d", r.Status)
	}
	got := s.servers(t)
	for _, b := range s.bs {
		g, ok := got[b.Addr]
		if !ok || g.Stuck != 0 || len(g.Policies) != 1 || g.Policies[0] != "sticky_cookie SRV" {
			t.Errorf("%s: %+v (listed %v)", b.Addr, g, ok)
		}
	}
	// A drained server nobody routes to is listed too.
	adminJSON(t, s.adminPort, "POST", "/sticky/servers/"+url.PathEscape("10.9.9.9:80")+"/drain", "", 200, nil)
	if g, ok := s.servers(t)["10.9.9.9:80"]; !ok || !g.Drained {
		t.Errorf("drained server missing: %+v", g)
	}
}

// TestDrainWait drives `caddy sticky drain --wait` as a real process: it
// must not return while an entry names the server, return 0 right after
// the last one goes, and fail at its timeout while entries remain.
func TestDrainWait(t *testing.T) {
	exe := caddyCommand(t)
	s := startOpsSite(t)
	s.users(t, "w", 30)
	addr := func(i int) string { return s.bs[i].Addr }
	admin := fmt.Sprintf("127.0.0.1:%d", s.adminPort)
	run := func(args ...string) (*exec.Cmd, *bytes.Buffer) {
		cmd := exec.Command(exe, append([]string{"sticky"}, append(args, "--address", admin)...)...)
		cmd.Env = append(os.Environ(), runAsCaddyEnv+"=1")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd, &out
	}
	keysOf := func(server string) []string {
		var page apiPage
		adminJSON(t, s.adminPort, "GET", "/sticky/tables/sessions?limit=1000&server="+url.QueryEscape(server), "", 200, &page)
		var keys []string
		for _, e := range page.Entries {
			keys = append(keys, e.Key)
		}
		return keys
	}

	// Timeout first: web2's users stay, so the wait fails.
	keep := keysOf(addr(1))
	if len(keep) == 0 {
		t.Fatal("no users on web2")
	}
	start := time.Now()
	cmd, out := run("drain", addr(1), "--wait", "--timeout", "1500ms")
	err := cmd.Wait()
	if err == nil || cmd.ProcessState.ExitCode() == 0 {
		t.Fatalf("drain --wait with %d users left exited 0:\n%s", len(keep), out)
	}
	if el := time.Since(start); el < 1500*time.Millisecond {
		t.Fatalf("gave up after %s, before its timeout", el)
	}
	if !strings.Contains(out.String(), fmt.Sprintf("%d users still stuck", len(keep))) {
		t.Errorf("timeout output:\n%s", out)
	}
	if n := len(keysOf(addr(1))); n != len(keep) {
		t.Fatalf("waiting changed the entries: %d, had %d", n, len(keep))
	}

	// Success: web1's users leave one by one while it waits.
	leaving := keysOf(addr(0))
	if len(leaving) < 2 {
		t.Fatalf("only %d users on web1", len(leaving))
	}
	cmd, out = run("drain", addr(0), "--wait", "--timeout", "60s")
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for i, k := range leaving {
		time.Sleep(300 * time.Millisecond)
		select {
		case err := <-done:
			t.Fatalf("drain --wait returned (%v) with %d entries left:\n%s", err, len(leaving)-i, out)
		default:
		}
		adminJSON(t, s.adminPort, "DELETE", "/sticky/tables/sessions/entries/"+url.PathEscape(k), "", 200, nil)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("drain --wait failed after the last user left: %v\n%s", err, out)
		}
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("drain --wait did not return after the last user left:\n%s", out)
	}
	text := out.String()
	if !strings.Contains(text, "drained "+addr(0)) || !strings.Contains(text, "no users stuck, safe to stop") {
		t.Errorf("output:\n%s", text)
	}
	// progress: plain lines (not a terminal), counts going down
	counts := regexp.MustCompile(`: (\d+) stuck users? left`).FindAllStringSubmatch(text, -1)
	if len(counts) < 2 {
		t.Fatalf("want a progress line per second, got:\n%s", text)
	}
	// (the process may start after the first user left, so the first
	// count can be below the number of users)
	prev := len(leaving)
	for _, c := range counts {
		n, _ := strconv.Atoi(c[1])
		if n > prev || n == 0 {
			t.Errorf("progress went from %d to %d (users %d):\n%s", prev, n, len(leaving), text)
		}
		prev = n
	}
	if first, _ := strconv.Atoi(counts[0][1]); prev >= first || strings.Contains(text, "\r") {
		t.Errorf("progress does not go down, or rewrites lines off a terminal:\n%q", text)
	}
	if !isDrained(t, s.adminPort, addr(0)) {
		t.Error("web1 not drained")
	}
}

// statusJSON fetches the status page as JSON.
func (s *opsSite) statusJSON(t *testing.T) (rep struct {
	Tables []struct {
		Name     string   `json:"name"`
		Used     int      `json:"used"`
		Size     int      `json:"size"`
		HitRatio *float64 `json:"hit_ratio"`
		Stats    struct {
			Hits, Misses, Evictions uint64
		} `json:"stats"`
	} `json:"tables"`
	Servers  []apiServer `json:"servers"`
	Policies []struct {
		Policy  string `json:"policy"`
		Servers []struct {
			Server    string `json:"server"`
			Available bool   `json:"available"`
			Healthy   bool   `json:"healthy"`
			Stuck     int    `json:"stuck"`
		} `json:"servers"`
	} `json:"policies"`
	Peers []any `json:"peers"`
},
) {
	t.Helper()
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/status", s.port), nil)
	req.Header.Set("Accept", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status JSON: %d %s: %s", res.StatusCode, res.Header.Get("Content-Type"), b)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	return rep
}

func TestStatusPageMatchesAdminAPI(t *testing.T) {
	s := startOpsSite(t)
	s.users(t, "s", 40)
	s.users(t, "s", 40)
	raw(t, s.port, "GET", "/cookie/", "")
	s.bs[2].Stop() // Caddy sees it down once a request fails there
	for i := 0; i < 3; i++ {
		raw(t, s.port, "GET", "/cookie/", "")
	}
	api := s.servers(t)
	rep := s.statusJSON(t)
	if len(rep.Servers) != len(api) {
		t.Fatalf("status lists %d servers, the API %d", len(rep.Servers), len(api))
	}
	for _, sv := range rep.Servers {
		a := api[sv.Server]
		if a.Stuck != sv.Stuck || a.Drained != sv.Drained || fmt.Sprint(a.Tables) != fmt.Sprint(sv.Tables) {
			t.Errorf("%s: status %+v, API %+v", sv.Server, sv, a)
		}
	}
	var tables []apiTable
	adminJSON(t, s.adminPort, "GET", "/sticky/tables", "", 200, &tables)
	if len(rep.Tables) != 1 || len(tables) != 1 || rep.Tables[0].Used != tables[0].Used || rep.Tables[0].Stats.Hits != tables[0].Stats.Hits {
		t.Fatalf("tables: status %+v, API %+v", rep.Tables, tables)
	}
	if r := rep.Tables[0].HitRatio; r == nil || *r < 0.49 || *r > 0.51 {
		t.Errorf("hit ratio %v, want 0.5 (each user twice)", r)
	}
	// both reverse_proxy handlers' policies, by name; only the cookie one
	// has passive health checks (fail_duration)
	if len(rep.Policies) != 2 || rep.Policies[0].Policy != "stick_table sessions" || rep.Policies[1].Policy != "sticky_cookie SRV" ||
		len(rep.Policies[0].Servers) != 3 || len(rep.Policies[1].Servers) != 3 {
		t.Fatalf("policies: %+v", rep.Policies)
	}
	for _, up := range rep.Policies[0].Servers {
		if !up.Available {
			t.Errorf("stick_table's view of %s: unavailable without health checks", up.Server)
		}
	}
	for _, up := range rep.Policies[1].Servers {
		if up.Stuck != api[up.Server].Stuck {
			t.Errorf("policy view of %s: stuck %d, API %d", up.Server, up.Stuck, api[up.Server].Stuck)
		}
		// Caddy's passive health check saw the stopped backend fail
		if dead := up.Server == s.bs[2].Addr; up.Healthy == dead || up.Available == dead {
			t.Errorf("health of %s (stopped: %v): healthy %v, available %v", up.Server, dead, up.Healthy, up.Available)
		}
	}

	// The HTML has the same numbers, one row per server.
	res := raw(t, s.port, "GET", "/status", "")
	if res.Status != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("status page: %d %s", res.Status, res.Header.Get("Content-Type"))
	}
	rows := serverRows(res.Body, "servers")
	for addr, a := range api {
		if rows[addr] != a.Stuck {
			t.Errorf("HTML row of %s says %d stuck, API %d", addr, rows[addr], a.Stuck)
		}
	}
	for _, want := range []string{`http-equiv="refresh" content="30"`, `name="token"`} {
		if !strings.Contains(res.Body, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	if strings.Contains(res.Body, "http://") || strings.Contains(res.Body, "https://") || strings.Contains(res.Body, " src=") {
		t.Error("the page references an external asset")
	}
}

// serverRows extracts, from the section with the given id of the page,
// each server row's stuck count.
func serverRows(page, section string) map[string]int {
	i := strings.Index(page, `<section id="`+section+`"`)
	if i < 0 {
		return nil
	}
	page = page[i:]
	if j := strings.Index(page, "</section>"); j >= 0 {
		page = page[:j]
	}
	out := map[string]int{}
	row := regexp.MustCompile(`(?s)<tr data-server="([^"]+)".*?<span class="stuck">(\d+)</span>`)
	for _, m := range row.FindAllStringSubmatch(page, -1) {
		n, _ := strconv.Atoi(m[2])
		out[htmlUnescape(m[1])] = n
	}
	return out
}

func htmlUnescape(s string) string {
	return strings.NewReplacer("&amp;", "&", "&lt;", "<", "&gt;", ">", "&#34;", `"`, "&#39;", "'").Replace(s)
}

func TestStatusPageActions(t *testing.T) {
	s := startOpsSite(t)
	s.users(t, "a", 6)
	page := raw(t, s.port, "GET", "/status", "").Body
	m := regexp.MustCompile(`name="token" value="([0-9a-f]+)"`).FindStringSubmatch(page)
	if m == nil {
		t.Fatal("no form token on a page with actions")
	}
	token := m[1]
	base := fmt.Sprintf("http://127.0.0.1:%d", s.port)
	target := s.bs[0].Addr
	post := func(form url.Values, hdr map[string]string) *http.Response {
		req, _ := http.NewRequest("POST", base+"/status", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res
	}
	good := url.Values{"token": {token}, "server": {target}, "action": {"drain"}}
	refused := []struct {
		name string
		form url.Values
		hdr  map[string]string
	}{
		{"cross-site fetch metadata", good, map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": base}},
		{"other origin", good, map[string]string{"Origin": "http://evil.example"}},
		{"other referer", good, map[string]string{"Referer": "http://evil.example/page"}},
		{"no origin at all", good, nil},
		{"no token", url.Values{"server": {target}, "action": {"drain"}}, map[string]string{"Sec-Fetch-Site": "same-origin"}},
		{"wrong token", url.Values{"token": {strings.Repeat("0", 64)}, "server": {target}, "action": {"drain"}}, map[string]string{"Origin": base}},
	}
	for _, c := range refused {
		if res := post(c.form, c.hdr); res.StatusCode != http.StatusForbidden {
			t.Errorf("%s: status %d, want 403", c.name, res.StatusCode)
		}
		if isDrained(t, s.adminPort, target) {
			t.Fatalf("%s: the server was drained", c.name)
		}
	}
	res := post(good, map[string]string{"Origin": base, "Sec-Fetch-Site": "same-origin"})
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/status" {
		t.Fatalf("drain: %d %s", res.StatusCode, res.Header.Get("Location"))
	}
	if !isDrained(t, s.adminPort, target) || !s.servers(t)[target].Drained {
		t.Fatal("the drain button did not drain")
	}
	if !strings.Contains(raw(t, s.port, "GET", "/status", "").Body, `value="undrain"`) {
		t.Error("a drained server offers no undrain button")
	}
	good.Set("action", "undrain")
	if res := post(good, map[string]string{"Referer": base + "/status"}); res.StatusCode != http.StatusSeeOther || isDrained(t, s.adminPort, target) {
		t.Fatalf("undrain: %d, drained %v", res.StatusCode, isDrained(t, s.adminPort, target))
	}
	good.Set("server", "not-a-known-server:1")
	good.Set("action", "drain")
	if res := post(good, map[string]string{"Origin": base}); res.StatusCode != http.StatusBadRequest {
		t.Errorf("unknown server: %d, want 400", res.StatusCode)
	}
}

// chromiumPath finds the browser, or skips (fails under CI) saying how
// to install it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is missing; install it with: apt-get install -y chromium")
	}
	t.Skip("chromium not found; install it with: apt-get install -y chromium")
	return ""
}

func chromiumArgs(dir string, extra ...string) []string {
	return append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars", "--user-data-dir=" + dir}, extra...)
}

// TestStatusPageInBrowser loads the page in headless Chromium from a
// running Caddy, checks the rendered DOM against the admin API, and writes
// a screenshot (to $STICKY_STATUS_SCREENSHOT too, when set, which is how
// docs/status.png is made).
func TestStatusPageInBrowser(t *testing.T) {
	browser := chromiumPath(t)
	s := startOpsSite(t)
	s.users(t, "b", 90)
	s.users(t, "b", 70)
	raw(t, s.port, "GET", "/cookie/", "")
	adminJSON(t, s.adminPort, "POST", "/sticky/servers/"+url.PathEscape(s.bs[1].Addr)+"/drain", "", 200, nil)
	s.users(t, "late", 12) // new users after the drain avoid web2
	s.bs[2].Stop()
	for range 3 {
		raw(t, s.port, "GET", "/cookie/", "") // Caddy's passive check marks web3 down
	}
	api := s.servers(t)
	pageURL := fmt.Sprintf("http://127.0.0.1:%d/status", s.port)

	dir := t.TempDir()
	ctx := func(args ...string) []byte {
		cmd := exec.Command(browser, chromiumArgs(filepath.Join(dir, "profile"), args...)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		done := make(chan struct{})
		var out []byte
		var err error
		go func() { out, err = cmd.Output(); close(done) }()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Fatalf("chromium did not finish in 60s: %s", stderr.String())
		}
		if err != nil {
			t.Fatalf("chromium %v: %v\n%s", args, err, stderr.String())
		}
		return out
	}
	dom := string(ctx("--dump-dom", pageURL))
	rows := serverRows(dom, "servers")
	if len(rows) != len(api) {
		t.Fatalf("the rendered page has %d server rows, the API %d servers:\n%s", len(rows), len(api), dom)
	}
	for addr, a := range api {
		if n, ok := rows[addr]; !ok || n != a.Stuck {
			t.Errorf("rendered row of %s: %d stuck (present %v), API %d", addr, n, ok, a.Stuck)
		}
	}
	if !regexp.MustCompile(`data-server="` + regexp.QuoteMeta(s.bs[1].Addr) + `" class="drained"`).MatchString(dom) {
		t.Error("the drained server's row is not marked drained")
	}
	// The sort script ran: headers became focusable.
	if !strings.Contains(dom, `data-sort="n" tabindex="0"`) {
		t.Error("the sort script did not run in the browser")
	}
	png := filepath.Join(dir, "status.png")
	ctx("--screenshot="+png, "--window-size=1280,800", pageURL)
	b, err := os.ReadFile(png)
	if err != nil || len(b) < 10000 || !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("screenshot: %d bytes, %v", len(b), err)
	}
	if dst := os.Getenv("STICKY_STATUS_SCREENSHOT"); dst != "" {
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	names := make([]string, 0, len(rows))
	for k := range rows {
		names = append(names, k)
	}
	sort.Strings(names)
	t.Logf("rendered rows %v, screenshot %d bytes", names, len(b))
}
