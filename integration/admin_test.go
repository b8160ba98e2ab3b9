package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
)

// adminSiteConfig is a Caddy with its admin API on adminPort, a table t of
// IP keys taken from the X-Client header (so one test client can act as
// many users), and a sticky_cookie route under /cookie/.
func adminSiteConfig(t *testing.T, adminPort, port int, bs []*backend, size int) string {
	return fmt.Sprintf(`{
	admin 127.0.0.1:%d
	auto_https off
	persist_config off
	storage file_system %s
	log {
		level ERROR
	}
	sticky {
		table t {
			type ip
			size %d
		}
	}
}

http://127.0.0.1:%d {
	handle /cookie/* {
		reverse_proxy %s {
			lb_policy sticky_cookie SRV {
				server %s web1
				server %s web2
			}
		}
	}
	handle {
		reverse_proxy %s {
			lb_policy stick_table t {
				on {header.X-Client}
				fallback round_robin
			}
		}
	}
}
`, adminPort, t.TempDir(), size, port, upstreamList(bs), bs[0].Addr, bs[1].Addr, upstreamList(bs))
}

// adminCall is one request to the real admin endpoint.
func adminCall(t *testing.T, adminPort int, method, path, body string) (int, http.Header, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, fmt.Sprintf("http://127.0.0.1:%d%s", adminPort, path), rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, res.Header, b
}

// adminJSON expects status and decodes the JSON answer into v.
func adminJSON(t *testing.T, adminPort int, method, path, body string, status int, v any) {
	t.Helper()
	got, hdr, b := adminCall(t, adminPort, method, path, body)
	if got != status {
		t.Fatalf("%s %s: status %d, want %d: %s", method, path, got, status, b)
	}
	if ct := hdr.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: Content-Type %q", method, path, ct)
	}
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
}

// asClient sends a request as the user with this client IP.
func asClient(t *testing.T, port int, ip string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/", port), nil)
	req.Header.Set("X-Client", ip)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 {
		t.Fatalf("request as %s: status %d: %s", ip, res.StatusCode, b)
	}
	return string(b)
}

type apiEntry struct {
	Key       string `json:"key"`
	Server    string `json:"server"`
	ExpiresIn int64  `json:"expires_in"`
	UpdatedBy string `json:"updated_by"`
	UpdatedAt string `json:"updated_at"`
}

type apiPage struct {
	Entries []apiEntry `json:"entries"`
	More    bool       `json:"more"`
	Next    string     `json:"next"`
}

type apiTable struct {
	Name   string `json:"name"`
	Type   string `json:"type"`
	Size   int    `json:"size"`
	Used   int    `json:"used"`
	Expire string `json:"expire"`
	// NoPurge: full tables refuse new keys
	NoPurge bool `json:"nopurge"`
	Stats   struct {
		Hits   uint64 `json:"hits"`
		Stores uint64 `json:"stores"`
	} `json:"stats"`
}

// runStickyCLI runs `caddy sticky <args>` as registered with Caddy's
// command line, in process.
func runStickyCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd, ok := caddycmd.Commands()["sticky"]
	if !ok {
		t.Fatal("`caddy sticky` is not registered")
	}
	root := &cobra.Command{Use: "sticky", SilenceUsage: true, SilenceErrors: true}
	cmd.CobraFunc(root)
	root.SetArgs(args)
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(io.Discard)
	err := root.Execute()
	return out.String(), err
}

// TestAdminAPIOverRealAdminSocket drives the sticky admin endpoints of a real
// Caddy, and checks that what they change is what the stick_table policy
// then does.
func TestAdminAPIOverRealAdminSocket(t *testing.T) {
	bs := startBackends(t, 2)
	byName := map[string]*backend{bs[0].Name: bs[0], bs[1].Name: bs[1]}
	adminPort, port := freePort(t), freePort(t)
	loadCaddy(t, adapt(t, adminSiteConfig(t, adminPort, port, bs, 1000)))

	var tables []apiTable
	adminJSON(t, adminPort, "GET", "/sticky/tables", "", 200, &tables)
	if len(tables) != 1 || tables[0].Name != "t" || tables[0].Type != "ip" || tables[0].Size != 1000 || tables[0].Used != 0 || tables[0].Expire != "30m0s" {
		t.Fatalf("tables: %+v", tables)
	}

	// A request stores its client; the API shows the entry.
	first := asClient(t, port, "10.1.1.1")
	var page apiPage
	adminJSON(t, adminPort, "GET", "/sticky/tables/t", "", 200, &page)
	if len(page.Entries) != 1 || page.Entries[0].Key != "10.1.1.1" || page.Entries[0].Server != byName[first].Addr {
		t.Fatalf("after one request from 10.1.1.1 (served by %s): %+v", first, page)
	}
	if e := page.Entries[0]; e.ExpiresIn <= 29*60*1000 || e.ExpiresIn > 30*60*1000 || e.UpdatedAt == "" {
		t.Fatalf("entry timing: %+v", e)
	}

	// Pinning the client elsewhere moves its requests there.
	other := bs[0]
	if first == bs[0].Name {
		other = bs[1]
	}
	var pinned apiEntry
	adminJSON(t, adminPort, "PUT", "/sticky/tables/t/entries/10.1.1.1", `{"server":"`+other.Addr+`"}`, 200, &pinned)
	if pinned.Key != "10.1.1.1" || pinned.Server != other.Addr {
		t.Fatalf("pin: %+v", pinned)
	}
	for range 5 {
		if got := asClient(t, port, "10.1.1.1"); got != other.Name {
			t.Fatalf("pinned to %s, request went to %s", other.Name, got)
		}
	}
	// A pin of a new key is honoured on the client's first request.
	adminJSON(t, adminPort, "PUT", "/sticky/tables/t/entries/10.2.2.2", `{"server":"`+bs[0].Addr+`"}`, 200, nil)
	for range 3 {
		if got := asClient(t, port, "10.2.2.2"); got != bs[0].Name {
			t.Fatalf("10.2.2.2 pinned to web1 went to %s", got)
		}
	}

	// Paging over 32 keys, 10 at a time.
	for i := range 30 {
		adminJSON(t, adminPort, "PUT", fmt.Sprintf("/sticky/tables/t/entries/10.3.0.%d", i+1), `{"server":"`+bs[i%2].Addr+`"}`, 200, nil)
	}
	var keys []string
	after := ""
	for {
		path := "/sticky/tables/t?limit=10"
		if after != "" {
			path += "&after=" + url.QueryEscape(after)
		}
		page = apiPage{}
		adminJSON(t, adminPort, "GET", path, "", 200, &page)
		for _, e := range page.Entries {
			keys = append(keys, e.Key)
		}
		if !page.More {
			break
		}
		after = page.Next
	}
	if len(keys) != 32 || keys[0] != "10.1.1.1" || keys[1] != "10.2.2.2" || keys[2] != "10.3.0.1" || keys[31] != "10.3.0.30" {
		t.Fatalf("paged keys (%d): %v", len(keys), keys)
	}

	// Clearing one server's entries leaves the other's.
	var onFirst apiPage
	adminJSON(t, adminPort, "GET", "/sticky/tables/t?limit=1000&server="+url.QueryEscape(bs[0].Addr), "", 200, &onFirst)
	var cleared struct {
		Cleared int `json:"cleared"`
	}
	adminJSON(t, adminPort, "DELETE", "/sticky/tables/t?server="+url.QueryEscape(bs[0].Addr), "", 200, &cleared)
	if cleared.Cleared != len(onFirst.Entries) || cleared.Cleared == 0 {
		t.Fatalf("cleared %d, web1 had %d entries", cleared.Cleared, len(onFirst.Entries))
	}
	page = apiPage{}
	adminJSON(t, adminPort, "GET", "/sticky/tables/t?limit=1000", "", 200, &page)
	if len(page.Entries) != 32-cleared.Cleared {
		t.Fatalf("%d entries left after clearing %d of 32", len(page.Entries), cleared.Cleared)
	}
	for _, e := range page.Entries {
		if e.Server != bs[1].Addr {
			t.Fatalf("entry of web1 survived: %+v", e)
		}
	}

	// Deleting a key forgets it.
	var del struct {
		Deleted bool `json:"deleted"`
	}
	adminJSON(t, adminPort, "DELETE", "/sticky/tables/t/entries/10.3.0.2", "", 200, &del)
	if !del.Deleted {
		t.Fatal("10.3.0.2 (a web2 entry) was not deleted")
	}
	adminJSON(t, adminPort, "GET", "/sticky/tables/t/entries/10.3.0.2", "", 404, nil)

	// Drain web2: new clients avoid it, stuck ones stay.
	drainPath := "/sticky/servers/" + url.PathEscape(bs[1].Addr) + "/drain"
	adminJSON(t, adminPort, "POST", drainPath, "", 200, nil)
	var drained struct {
		Drained []string `json:"drained"`
	}
	adminJSON(t, adminPort, "GET", "/sticky/servers", "", 200, &drained)
	if !slices.Equal(drained.Drained, []string{bs[1].Addr}) {
		t.Fatalf("drained: %v", drained.Drained)
	}
	for i := range 10 {
		if got := asClient(t, port, fmt.Sprintf("10.4.0.%d", i+1)); got != bs[0].Name {
			t.Fatalf("a new client went to drained %s", got)
		}
	}
	if got := asClient(t, port, "10.3.0.4"); got != bs[1].Name {
		t.Fatalf("a client stuck to drained web2 moved to %s", got)
	}
	var undrained struct{ Drained bool }
	adminJSON(t, adminPort, "DELETE", drainPath, "", 200, &undrained)
	adminJSON(t, adminPort, "GET", drainPath, "", 200, &undrained)
	if undrained.Drained {
		t.Fatal("still drained after DELETE")
	}

	// The cookie value that routes to each server, from the running policy.
	var routes []struct{ Cookie, Value, Mode string }
	adminJSON(t, adminPort, "GET", "/sticky/cookie?server="+url.QueryEscape(bs[1].Addr)+"&policy=SRV", "", 200, &routes)
	if len(routes) != 1 || routes[0].Cookie != "SRV" || routes[0].Value != "web2" || routes[0].Mode != "insert" {
		t.Fatalf("cookie routes: %+v", routes)
	}
	if r := raw(t, port, "GET", "/cookie/x", "SRV="+routes[0].Value); r.Body != bs[1].Name {
		t.Fatalf("the cookie the API gave went to %s", r.Body)
	}
	adminJSON(t, adminPort, "GET", "/sticky/cookie?server=x&policy=NOPE", "", 404, nil)

	// Errors are JSON with a telling status.
	for _, c := range []struct {
		method, path, body string
		status             int
	}{
		{"GET", "/sticky/tables/nope", "", 404},
		{"PUT", "/sticky/tables/t/entries/not-an-ip", `{"server":"a:80"}`, 400},
		{"PUT", "/sticky/tables/t/entries/10.0.0.1", `{"server":""}`, 400},
		{"GET", "/sticky/tables/t?limit=0", "", 400},
		{"POST", "/sticky/tables", "", 405},
	} {
		status, hdr, b := adminCall(t, adminPort, c.method, c.path, c.body)
		var e struct {
			Error string `json:"error"`
		}
		if status != c.status || json.Unmarshal(b, &e) != nil || e.Error == "" {
			t.Errorf("%s %s: %d %s, want %d with a JSON error", c.method, c.path, status, b, c.status)
		}
		if c.status == 405 && hdr.Get("Allow") != "GET" {
			t.Errorf("405 without Allow: %v", hdr)
		}
	}

	// The CLI, through Caddy's own admin client, sees the same.
	adminAddr := fmt.Sprintf("127.0.0.1:%d", adminPort)
	out, err := runStickyCLI(t, "show", "t", "--key", "10.2.2.2", "--address", adminAddr)
	if err != nil || out != "no entries\n" {
		t.Fatalf("10.2.2.2 was cleared with web1, yet show printed %q (%v)", out, err)
	}
	out, err = runStickyCLI(t, "show", "t", "--key", "10.3.0.4", "--address", adminAddr)
	if err != nil || !strings.Contains(out, "10.3.0.4  "+bs[1].Addr) {
		t.Fatalf("cli show 10.3.0.4: %v, %q", err, out)
	}
	if out, err = runStickyCLI(t, "set", "t", "10.9.9.9", bs[0].Addr, "--address", adminAddr); err != nil || !strings.Contains(out, "10.9.9.9 -> "+bs[0].Addr) {
		t.Fatalf("cli set: %v, %q", err, out)
	}
	if got := asClient(t, port, "10.9.9.9"); got != bs[0].Name {
		t.Fatalf("pinned through the CLI to web1, went to %s", got)
	}
	if out, err = runStickyCLI(t, "tables", "--address", adminAddr); err != nil || !strings.Contains(out, "t     ip") {
		t.Fatalf("cli tables: %v, %q", err, out)
	}
	if _, err = runStickyCLI(t, "show", "nope", "--address", adminAddr); err == nil || !strings.Contains(err.Error(), `HTTP 404: no stick table named "nope"`) {
		t.Fatalf("cli unknown table: %v", err)
	}

	// After a reload the API serves the new config's table: same entries,
	// new size.
	page = apiPage{}
	adminJSON(t, adminPort, "GET", "/sticky/tables/t?limit=1000", "", 200, &page)
	before := page.Entries
	if err := loadAgain(adapt(t, adminSiteConfig(t, adminPort, port, bs, 2000))); err != nil {
		t.Fatal(err)
	}
	tables = nil
	adminJSON(t, adminPort, "GET", "/sticky/tables", "", 200, &tables)
	if len(tables) != 1 || tables[0].Size != 2000 || tables[0].Used != len(before) {
		t.Fatalf("after reload: %+v, want size 2000 and %d entries", tables, len(before))
	}
	page = apiPage{}
	adminJSON(t, adminPort, "GET", "/sticky/tables/t?limit=1000", "", 200, &page)
	if len(page.Entries) != len(before) {
		t.Fatalf("after reload %d entries, before %d", len(page.Entries), len(before))
	}
	for i, e := range page.Entries {
		if e.Key != before[i].Key || e.Server != before[i].Server {
			t.Fatalf("entry %d changed across the reload: %+v -> %+v", i, before[i], e)
		}
	}
}

// isDrained asks the admin API whether server is drained.
func isDrained(t *testing.T, adminPort int, server string) bool {
	t.Helper()
	var st struct{ Drained bool }
	adminJSON(t, adminPort, "GET", "/sticky/servers/"+url.PathEscape(server)+"/drain", "", 200, &st)
	return st.Drained
}

// undrainAllAtEnd undrains, when the test ends and while Caddy still runs,
// every server the test drained: drain state belongs to the process and
// would leak into the next test.
func undrainAllAtEnd(t *testing.T, adminPort int) {
	t.Cleanup(func() {
		code, _, body := adminCall(t, adminPort, "GET", "/sticky/servers", "")
		if code != 200 {
			return
		}
		var list struct{ Drained []string }
		_ = json.Unmarshal(body, &list)
		for _, s := range list.Drained {
			adminCall(t, adminPort, "DELETE", "/sticky/servers/"+url.PathEscape(s)+"/drain", "")
		}
	})
}
