package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
)

// tableSite starts Caddy with a sticky table and a stick_table policy.
func tableSite(t *testing.T, bs []*backend, global, policy, extra string) int {
	t.Helper()
	port := freePort(t)
	loadCaddy(t, adapt(t, tableConfig(t, port, bs, global, policy, extra, "")))
	return port
}

func tableConfig(t *testing.T, port int, bs []*backend, global, policy, extra, admin string) string {
	if admin == "" {
		admin = "admin off"
	}
	return fmt.Sprintf(`{
	%s
	auto_https off
	persist_config off
	storage file_system %s
	log {
		level ERROR
	}
	sticky {
%s
	}
}

http://127.0.0.1:%d {
	header >X-Outcome {http.sticky.outcome}
	reverse_proxy %s {
		lb_policy %s
%s
	}
}
`, admin, t.TempDir(), global, port, upstreamList(bs), policy, extra)
}

// as sends a request as one user, identified by the X-User header.
func as(t testing.TB, port int, user string, cookie string) response {
	t.Helper()
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/", port), nil)
	req.Header.Set("X-User", user)
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		// a keep-alive connection closed by a config reload: retry once,
		// as a browser does for an idempotent request
		res, err = http.DefaultClient.Do(req)
	}
	if err != nil {
		t.Fatalf("request as %s: %v", user, err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return response{Status: res.StatusCode, Body: string(body), Header: res.Header, SetCookies: res.Header.Values("Set-Cookie")}
}

func TestStickOnHeader(t *testing.T) {
	bs := startBackends(t, 3)
	port := tableSite(t, bs, `		table users {
			type string len 64
		}`, `stick_table users {
			on {header.X-User}
			fallback round_robin
		}`, "")
	first := map[string]string{}
	for i := 0; i < 30; i++ {
		u := fmt.Sprintf("user%d", i)
		r := as(t, port, u, "")
		if r.Header.Get("X-Outcome") != "miss" {
			t.Fatalf("new user outcome %q", r.Header.Get("X-Outcome"))
		}
		first[u] = r.Body
	}
	for round := 0; round < 3; round++ {
		for u, b := range first {
			r := as(t, port, u, "")
			if r.Body != b {
				t.Fatalf("%s moved from %s to %s", u, b, r.Body)
			}
			if r.Header.Get("X-Outcome") != "hit" {
				t.Fatalf("outcome %q, want hit", r.Header.Get("X-Outcome"))
			}
		}
	}
	// without the header the key is empty: it neither matches nor stores
	if r := raw(t, port, "GET", "/", ""); r.Status != 200 || r.Header.Get("X-Outcome") != "miss" {
		t.Errorf("request without key: %d %q", r.Status, r.Header.Get("X-Outcome"))
	}
}

// sessionApp sets a new JSESSIONID for requests that have none, like a
// servlet container.
func sessionApp(name string, counter *atomic.Int64) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		if _, err := r.Cookie("JSESSIONID"); err != nil {
			w.Header().Add("Set-Cookie", fmt.Sprintf("JSESSIONID=%s-%d; Path=/; HttpOnly", name, counter.Add(1)))
		}
		_, _ = io.WriteString(w, name)
	}
}

func TestLearnJSESSIONIDFromResponse(t *testing.T) {
	var n atomic.Int64
	bs := []*backend{
		startBackend(t, "web1", sessionApp("web1", &n)),
		startBackend(t, "web2", sessionApp("web2", &n)),
		startBackend(t, "web3", sessionApp("web3", &n)),
	}
	port := tableSite(t, bs, `		table sessions`, `stick_table sessions {
			match {cookie.JSESSIONID}
			store_response cookie JSESSIONID
			fallback round_robin
		}`, "")
	for i := 0; i < 9; i++ {
		c := newClient(t, port)
		first := c.get(t, "/")
		sid, ok := cookieValue(first.SetCookies, "JSESSIONID")
		if !ok || !strings.HasPrefix(sid, first.Body+"-") {
			t.Fatalf("app set %q from %s", sid, first.Body)
		}
		for j := 0; j < 5; j++ {
			r := c.get(t, "/")
			if r.Body != first.Body {
				t.Fatalf("session %s created on %s went to %s", sid, first.Body, r.Body)
			}
			if r.Header.Get("X-Outcome") != "hit" {
				t.Fatalf("outcome %q", r.Header.Get("X-Outcome"))
			}
		}
	}
}

func TestDrainKeepsStuckUsersAndTakesNoNewOnes(t *testing.T) {
	bs := startBackends(t, 3)
	adminPort, port := freePort(t), freePort(t)
	loadCaddy(t, adapt(t, tableConfig(t, port, bs, `		table users`, `stick_table users {
			on {header.X-User}
			fallback round_robin
		}`, "", fmt.Sprintf("admin 127.0.0.1:%d", adminPort))))
	on := map[string]string{}
	for i := 0; i < 30; i++ {
		u := fmt.Sprintf("u%d", i)
		on[u] = as(t, port, u, "").Body
	}
	drainPath := "/sticky/servers/" + url.PathEscape(bs[0].Addr) + "/drain"
	adminJSON(t, adminPort, "POST", drainPath, "", 200, nil)
	t.Cleanup(func() { adminCall(t, adminPort, "DELETE", drainPath, "") })
	for u, b := range on {
		r := as(t, port, u, "")
		if r.Body != b {
			t.Errorf("stuck user %s moved from %s to %s by a drain", u, b, r.Body)
		}
		if b == "web1" && r.Header.Get("X-Outcome") != "drained" {
			t.Errorf("user on the drained server: outcome %q", r.Header.Get("X-Outcome"))
		}
	}
	for i := 0; i < 30; i++ {
		if r := as(t, port, fmt.Sprintf("new%d", i), ""); r.Body == "web1" {
			t.Fatalf("a new user went to the drained server")
		}
	}
}

// TestBackendFailureMovesOnlyItsUsers is the seed's comparison: 4 backends,
// 1,000 users stuck through a table, one backend fails; exactly its users
// move. A modulo hash over the server count (HAProxy's balance source with
// map-based hashing) is computed beside it on the same users.
func TestBackendFailureMovesOnlyItsUsers(t *testing.T) {
	bs := startBackends(t, 4)
	port := tableSite(t, bs, `		table users {
			size 10k
		}`, `stick_table users {
			on {header.X-User}
			fallback round_robin
		}`, `		lb_retries 2
		fail_duration 30s
		max_fails 1`)
	const users = 1000
	before := make([]string, users)
	for i := range before {
		before[i] = as(t, port, fmt.Sprintf("user-%d", i), "").Body
	}
	bs[2].Stop()
	moved, movedOthers, failed := 0, 0, 0
	for i := range before {
		r := as(t, port, fmt.Sprintf("user-%d", i), "")
		if r.Status != 200 {
			failed++
			continue
		}
		if r.Body != before[i] {
			moved++
			if before[i] != "web3" {
				movedOthers++
			}
		}
	}
	onDead := 0
	for _, b := range before {
		if b == "web3" {
			onDead++
		}
	}
	// what `balance source`-style hashing (hash mod server count) would
	// move when the pool shrinks from 4 to 3 servers
	moduloMoved := 0
	for i := 0; i < users; i++ {
		h := xxhash.Sum64String(fmt.Sprintf("user-%d", i))
		if h%4 != h%3 {
			moduloMoved++
		}
	}
	t.Logf("stick table: %d of %d users moved (%d were on the dead server); modulo hash would move %d", moved, users, onDead, moduloMoved)
	if failed != 0 {
		t.Errorf("%d requests failed", failed)
	}
	if movedOthers != 0 {
		t.Errorf("%d users of healthy servers moved", movedOthers)
	}
	if moved != onDead || onDead != users/4 {
		t.Errorf("moved %d, the dead server had %d (want %d with round_robin)", moved, onDead, users/4)
	}
	if moduloMoved < users/2 {
		t.Errorf("modulo hash moved only %d; the comparison is off", moduloMoved)
	}
	// the moved users are re-stuck where they landed
	for i := range before {
		if before[i] != "web3" {
			continue
		}
		a := as(t, port, fmt.Sprintf("user-%d", i), "").Body
		if b := as(t, port, fmt.Sprintf("user-%d", i), "").Body; a != b || a == "web3" {
			t.Fatalf("redispatched user not re-stuck: %s then %s", a, b)
		}
	}
}

func TestChainCookieThenTable(t *testing.T) {
	bs := startBackends(t, 3)
	port := tableSite(t, bs, `		table users`, `sticky_cookie SRV {
			fallback stick_table users {
				on {header.X-User}
				fallback round_robin
			}
		}`, "")
	// the table places the user; the cookie follows the table's choice
	r := as(t, port, "alice", "")
	v, ok := cookieValue(r.SetCookies, "SRV")
	if !ok {
		t.Fatal("no cookie")
	}
	// without the cookie the table still knows alice
	if again := as(t, port, "alice", ""); again.Body != r.Body {
		t.Errorf("table forgot alice: %s then %s", r.Body, again.Body)
	}
	// the cookie wins over the table
	other := map[string]string{}
	for _, b := range bs {
		other[b.Name] = b.Addr
	}
	if got := as(t, port, "alice", "SRV="+v).Body; got != r.Body {
		t.Errorf("cookie routed to %s, want %s", got, r.Body)
	}
}

func TestChainTableThenCookie(t *testing.T) {
	bs := startBackends(t, 3)
	port := tableSite(t, bs, `		table users`, `stick_table users {
			match {header.X-User}
			fallback sticky_cookie SRV {
				fallback round_robin
			}
		}`, "")
	// no table entry: the cookie policy decides and sets its cookie
	c := newClient(t, port)
	first := c.get(t, "/")
	if countCookie(first.SetCookies, "SRV") != 1 {
		t.Fatalf("cookie policy as fallback set no cookie: %v", first.SetCookies)
	}
	for i := 0; i < 5; i++ {
		if r := c.get(t, "/"); r.Body != first.Body {
			t.Fatalf("moved from %s to %s", first.Body, r.Body)
		}
	}
}

func TestFirstChoiceHashAgreesAcrossInstances(t *testing.T) {
	bs := startBackends(t, 5)
	port := tableSite(t, bs, `		table users`, `stick_table users {
			on {header.X-User}
			first_choice hash
		}`, "")
	first := map[string]string{}
	for i := 0; i < 50; i++ {
		u := fmt.Sprintf("u%d", i)
		first[u] = as(t, port, u, "").Body
	}
	// a second, independent instance (a fresh config with a fresh table of
	// another name) places every user on the same server without any
	// shared state
	port2 := freePort(t)
	if err := loadAgain(adapt(t, tableConfig(t, port2, bs, `		table other`, `stick_table other {
			on {header.X-User}
			first_choice hash
		}`, "", ""))); err != nil {
		t.Fatal(err)
	}
	spread := map[string]bool{}
	for u, b := range first {
		if got := as(t, port2, u, "").Body; got != b {
			t.Errorf("%s: %s on one instance, %s on the other", u, b, got)
		}
		spread[b] = true
	}
	if len(spread) < 4 {
		t.Errorf("hashing used only %d of 5 servers for 50 users", len(spread))
	}
}

func TestPersistAcrossRestart(t *testing.T) {
	bs := startBackends(t, 3)
	port := freePort(t)
	snap := filepath.Join(t.TempDir(), "sticky.snap")
	cfg := adapt(t, tableConfig(t, port, bs, `		table users
		persist `+snap, `stick_table users {
			on {header.X-User}
		}`, "", ""))
	loadCaddy(t, cfg)
	on := map[string]string{}
	for i := 0; i < 30; i++ {
		u := fmt.Sprintf("p%d", i)
		on[u] = as(t, port, u, "").Body
	}
	// a full stop and a new start, as a process restart does
	if err := stopCaddy(); err != nil {
		t.Fatal(err)
	}
	if err := loadAgain(cfg); err != nil {
		t.Fatal(err)
	}
	for u, b := range on {
		r := as(t, port, u, "")
		if r.Body != b || r.Header.Get("X-Outcome") != "hit" {
			t.Errorf("%s: %s before the restart, %s (%s) after", u, b, r.Body, r.Header.Get("X-Outcome"))
		}
	}
}

// TestReloadsUnderTrafficLoseNothing reloads the config 20 times through
// the admin API while users keep sending requests: no request fails, no
// user moves, and the table keeps every entry.
func TestReloadsUnderTrafficLoseNothing(t *testing.T) {
	bs := startBackends(t, 3)
	port, adminPort := freePort(t), freePort(t)
	admin := fmt.Sprintf("admin 127.0.0.1:%d", adminPort)
	cfg := adapt(t, tableConfig(t, port, bs, `		table users {
			size 10k
		}`, `stick_table users {
			on {header.X-User}
		}`, "", admin))
	loadCaddy(t, cfg)

	const users = 60
	on := make([]string, users)
	for i := range on {
		on[i] = as(t, port, fmt.Sprintf("r%d", i), "").Body
	}
	var failed, moved, sent, retried atomic.Int64
	var errMu sync.Mutex
	var errs []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			client := &http.Client{Timeout: 10 * time.Second}
			for i := w; ; i = (i + 4) % users {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/", port), nil)
				req.Header.Set("X-User", fmt.Sprintf("r%d", i))
				res, err := client.Do(req)
				sent.Add(1)
				if err != nil {
					// Caddy hands its listening socket to the new config with
					// SO_REUSEPORT; the kernel may reset a handshake in flight
					// and the old server closes its keep-alive connections.
					// Browsers retry an idempotent request once on such
					// errors, and so do we, counting it.
					retried.Add(1)
					res, err = client.Do(req)
				}
				if err != nil {
					failed.Add(1)
					errMu.Lock()
					errs = append(errs, err.Error())
					errMu.Unlock()
					continue
				}
				body, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if res.StatusCode != 200 {
					failed.Add(1)
					errMu.Lock()
					errs = append(errs, fmt.Sprintf("status %d: %s", res.StatusCode, body))
					errMu.Unlock()
				} else if string(body) != on[i] {
					moved.Add(1)
				}
			}
		}(w)
	}
	for i := 0; i < 20; i++ {
		res := postJSON(t, fmt.Sprintf("http://127.0.0.1:%d/load", adminPort), cfg, map[string]string{"Cache-Control": "must-revalidate"})
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("reload %d: %d %s", i, res.StatusCode, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	t.Logf("%d requests during 20 reloads; %d connection-level errors retried once", sent.Load(), retried.Load())
	if failed.Load() != 0 || moved.Load() != 0 {
		t.Errorf("%d failed and %d moved requests across reloads: %q", failed.Load(), moved.Load(), errs)
	}
	res, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/sticky/tables", adminPort))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var tables []struct {
		Name string `json:"name"`
		Used int    `json:"used"`
	}
	if err := json.NewDecoder(res.Body).Decode(&tables); err != nil {
		t.Fatal(err)
	}
	if len(tables) != 1 || tables[0].Used != users {
		t.Errorf("after 20 reloads the table holds %+v, want %d entries", tables, users)
	}
}

// TestServerNamesSurviveAddressChange stores server names instead of
// addresses: a config that reaches the same backends through other
// addresses (localhost instead of 127.0.0.1, as another instance might)
// still finds every user's server.
func TestServerNamesSurviveAddressChange(t *testing.T) {
	bs := startBackends(t, 3)
	port, adminPort := freePort(t), freePort(t)
	policy := func(host string) (string, string) {
		var ups, names []string
		for i, b := range bs {
			_, p, _ := strings.Cut(b.Addr, ":")
			addr := host + ":" + p
			ups = append(ups, addr)
			names = append(names, fmt.Sprintf("\t\t\tserver %s app%d", addr, i+1))
		}
		return strings.Join(ups, " "), "stick_table users {\n\t\t\ton {header.X-User}\n" + strings.Join(names, "\n") + "\n\t\t}"
	}
	cfg := func(host string) []byte {
		ups, pol := policy(host)
		text := tableConfig(t, port, bs, `		table users`, pol, "", fmt.Sprintf("admin 127.0.0.1:%d", adminPort))
		return adapt(t, strings.Replace(text, upstreamList(bs), ups, 1))
	}
	loadCaddy(t, cfg("127.0.0.1"))
	home := map[string]string{}
	for i := 0; i < 30; i++ {
		u := fmt.Sprintf("n%d", i)
		home[u] = as(t, port, u, "").Body
	}
	res, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/sticky/tables/users?key=n0", adminPort))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(body), `"server":"app`) {
		t.Fatalf("the table stores addresses, not names: %s", body)
	}
	if err := loadAgain(cfg("localhost")); err != nil {
		t.Fatal(err)
	}
	for u, b := range home {
		r := as(t, port, u, "")
		if r.Body != b || r.Header.Get("X-Outcome") != "hit" {
			t.Errorf("%s: %s before, %s (%s) through the new addresses", u, b, r.Body, r.Header.Get("X-Outcome"))
		}
	}
}
