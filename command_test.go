package sticky

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/caddy-sticky/sticky/selection"
	"github.com/caddy-sticky/sticky/sticktable"
)

// cliServer serves the admin API module on a random local port, the way
// Caddy's admin endpoint does, and returns its address.
func cliServer(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(adminMux())
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// cliRun runs `caddy sticky <args>` in process against the admin API at
// addr and returns what it printed.
func cliRun(t *testing.T, addr string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	root := &cobra.Command{Use: "sticky", SilenceUsage: true, SilenceErrors: true}
	setupStickyCommand(root)
	if addr != "" {
		args = append(args, "--address", addr)
	}
	root.SetArgs(args)
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	err = root.Execute()
	return out.String(), errOut.String(), err
}

func cliOK(t *testing.T, addr string, args ...string) string {
	t.Helper()
	out, _, err := cliRun(t, addr, args...)
	if err != nil {
		t.Fatalf("caddy sticky %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// rows splits table output into lines of whitespace-separated fields.
func rows(out string) [][]string {
	var rs [][]string
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		rs = append(rs, strings.Fields(line))
	}
	return rs
}

func TestCLIRegistered(t *testing.T) {
	cmd, ok := caddycmd.Commands()["sticky"]
	if !ok {
		t.Fatal("`caddy sticky` is not registered")
	}
	if cmd.CobraFunc == nil || cmd.Short == "" {
		t.Fatalf("incomplete command: %+v", cmd)
	}
	root := &cobra.Command{Use: "sticky"}
	cmd.CobraFunc(root)
	var names []string
	for _, c := range root.Commands() {
		names = append(names, c.Name())
	}
	slices.Sort(names)
	want := []string{"clear", "cookie", "delete", "drain", "peers", "servers", "set", "show", "tables", "undrain"}
	if !slices.Equal(names, want) {
		t.Fatalf("subcommands %v, want %v", names, want)
	}
	for _, f := range []string{"address", "config", "adapter", "json"} {
		if root.PersistentFlags().Lookup(f) == nil {
			t.Errorf("no --%s flag", f)
		}
	}
}

func TestCLITables(t *testing.T) {
	ip := adminTable(t, "clients", sticktable.Config{Type: sticktable.KeyIP, Size: 1000, Expire: 10 * time.Minute}, "cluster")
	str := adminTable(t, "sessions", sticktable.Config{Type: sticktable.KeyString, Len: 16, NoPurge: true}, "")
	adminPublish(t, ip, str)
	mustStore(t, ip, "10.0.0.1", "a:80")
	ip.table.Match("10.0.0.1")
	addr := cliServer(t)

	rs := rows(cliOK(t, addr, "tables"))
	want := [][]string{
		{"NAME", "TYPE", "SIZE", "USED", "EXPIRE", "PEERS", "HITS", "MISSES", "STORES", "EVICTIONS"},
		{"clients", "ip", "1000", "1", "10m0s", "cluster", "1", "0", "1", "0"},
		{"sessions", "string", "len", "16", "1048576", "nopurge", "0", "30m0s", "-", "0", "0", "0", "0"},
	}
	if !slices.EqualFunc(rs, want, slices.Equal) {
		t.Fatalf("tables output:\n%q\nwant\n%q", rs, want)
	}

	var got []tableInfo
	if err := json.Unmarshal([]byte(cliOK(t, addr, "tables", "--json")), &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Name != "clients" || got[0].Stats.Hits != 1 || got[1].Len != 16 {
		t.Fatalf("--json: %+v", got)
	}

	adminPublish(t)
	if out := cliOK(t, addr, "tables"); out != "no stick tables\n" {
		t.Fatalf("no tables: %q", out)
	}
}

func TestCLIShow(t *testing.T) {
	h := adminTable(t, "clients", sticktable.Config{Type: sticktable.KeyIP}, "")
	adminPublish(t, h)
	fill(t, h, 250)
	addr := cliServer(t)

	out, hint, err := cliRun(t, addr, "show", "clients", "--limit", "100")
	if err != nil {
		t.Fatal(err)
	}
	rs := rows(out)
	if len(rs) != 101 || strings.Join(rs[0], " ") != "KEY SERVER EXPIRES IN UPDATED BY UPDATED AT" {
		t.Fatalf("%d lines, header %q", len(rs), rs[0])
	}
	if want := []string{"10.0.0.1", "a:80", "30m0s", "node1", adminClock.Format(time.RFC3339Nano)}; !slices.Equal(rs[1], want) {
		t.Fatalf("first row %q, want %q", rs[1], want)
	}
	if rs[100][0] != "10.0.0.100" {
		t.Fatalf("last row %q", rs[100])
	}
	if !strings.Contains(hint, "caddy sticky show clients --after 10.0.0.100") {
		t.Fatalf("no next-page hint on stderr: %q", hint)
	}

	// Following the hint continues where the page ended.
	rs = rows(cliOK(t, addr, "show", "clients", "--limit", "100", "--after", "10.0.0.100"))
	if len(rs) != 101 || rs[1][0] != "10.0.0.101" {
		t.Fatalf("second page starts at %q (%d lines)", rs[1], len(rs))
	}

	out, hint, err = cliRun(t, addr, "show", "clients", "--all", "--limit", "60")
	if err != nil {
		t.Fatal(err)
	}
	rs = rows(out)
	if len(rs) != 251 || hint != "" {
		t.Fatalf("--all: %d lines, hint %q", len(rs), hint)
	}
	seen := map[string]bool{}
	for _, r := range rs[1:] {
		seen[r[0]] = true
	}
	if len(seen) != 250 {
		t.Fatalf("--all showed %d distinct keys", len(seen))
	}

	rs = rows(cliOK(t, addr, "show", "clients", "--all", "--server", "b:80"))
	if len(rs) != 126 {
		t.Fatalf("--server b:80: %d lines, want 125 entries", len(rs))
	}
	for _, r := range rs[1:] {
		if r[1] != "b:80" {
			t.Fatalf("--server b:80 showed %q", r)
		}
	}

	rs = rows(cliOK(t, addr, "show", "clients", "--key", "10.0.0.7"))
	if len(rs) != 2 || rs[1][0] != "10.0.0.7" || rs[1][1] != "a:80" {
		t.Fatalf("--key: %q", rs)
	}
	if out := cliOK(t, addr, "show", "clients", "--key", "10.9.9.9"); out != "no entries\n" {
		t.Fatalf("absent key: %q", out)
	}

	var page entryPage
	if err := json.Unmarshal([]byte(cliOK(t, addr, "show", "clients", "--json")), &page); err != nil {
		t.Fatal(err)
	}
	if len(page.Entries) != defaultLimit || !page.More || page.Next != "10.0.0.100" {
		t.Fatalf("--json: %d entries, more %v, next %q", len(page.Entries), page.More, page.Next)
	}
	page = entryPage{}
	if err := json.Unmarshal([]byte(cliOK(t, addr, "show", "clients", "--json", "--all")), &page); err != nil {
		t.Fatal(err)
	}
	if len(page.Entries) != 250 || page.More {
		t.Fatalf("--json --all: %d entries, more %v", len(page.Entries), page.More)
	}

	if _, _, err := cliRun(t, addr, "show", "clients", "--limit", "-3"); err == nil {
		t.Fatal("negative --limit accepted")
	}
}

func TestCLISetDelete(t *testing.T) {
	h := adminTable(t, "sessions", sticktable.Config{Type: sticktable.KeyString}, "")
	adminPublish(t, h)
	addr := cliServer(t)

	for _, key := range []string{"a/b c", "..", "100%", "plain"} {
		out := cliOK(t, addr, "set", "sessions", key, "10.0.0.11:8080")
		if want := fmt.Sprintf("sessions: %s -> 10.0.0.11:8080 (expires in 30m0s)\n", key); out != want {
			t.Fatalf("set: %q, want %q", out, want)
		}
		if e, ok := h.table.Get(key); !ok || e.Server != "10.0.0.11:8080" {
			t.Fatalf("key %q: %+v, %v", key, e, ok)
		}
		rs := rows(cliOK(t, addr, "show", "sessions", "--key", key))
		if len(rs) != 2 || rs[1][len(rs[1])-4] != "10.0.0.11:8080" {
			t.Fatalf("show --key %q: %q", key, rs)
		}
		if out := cliOK(t, addr, "delete", "sessions", key); out != fmt.Sprintf("sessions: deleted %s\n", key) {
			t.Fatalf("delete: %q", out)
		}
		if _, ok := h.table.Get(key); ok {
			t.Fatalf("key %q still there", key)
		}
		if out := cliOK(t, addr, "delete", "sessions", key); out != fmt.Sprintf("sessions: %s was not in the table\n", key) {
			t.Fatalf("second delete: %q", out)
		}
	}

	var e entryInfo
	if err := json.Unmarshal([]byte(cliOK(t, addr, "set", "sessions", "k", "s:1", "--json")), &e); err != nil {
		t.Fatal(err)
	}
	if e.Key != "k" || e.Server != "s:1" || e.UpdatedBy != "node1" {
		t.Fatalf("set --json: %+v", e)
	}
}

func TestCLIClear(t *testing.T) {
	h := adminTable(t, "clients", sticktable.Config{Type: sticktable.KeyIP}, "")
	adminPublish(t, h)
	fill(t, h, 30)
	addr := cliServer(t)

	if out := cliOK(t, addr, "clear", "clients", "--server", "a:80"); out != "clients: cleared 15 entries of a:80\n" {
		t.Fatalf("clear --server: %q", out)
	}
	if n := h.table.Len(); n != 15 {
		t.Fatalf("%d entries left, want 15", n)
	}
	if _, _, err := cliRun(t, addr, "clear", "clients", "--server", ""); err == nil || !strings.Contains(err.Error(), "--server must not be empty") {
		t.Fatalf("empty --server: %v", err)
	}
	if n := h.table.Len(); n != 15 {
		t.Fatalf("an empty --server cleared entries: %d left", n)
	}
	if out := cliOK(t, addr, "clear", "clients"); out != "clients: cleared 15 entries\n" {
		t.Fatalf("clear: %q", out)
	}
	if n := h.table.Len(); n != 0 {
		t.Fatalf("%d entries after clear", n)
	}
	if out := cliOK(t, addr, "clear", "clients", "--json"); strings.TrimSpace(out) != "{\n  \"cleared\": 0\n}" {
		t.Fatalf("clear --json: %q", out)
	}
}

func TestCLIDrain(t *testing.T) {
	addr := cliServer(t)
	const server = "[2001:db8::7]:8080"
	t.Cleanup(func() { state.drained.Set(server, false) })

	if out := cliOK(t, addr, "drain", server); out != "drained "+server+": no new users go there, stuck users stay\n" {
		t.Fatalf("drain: %q", out)
	}
	if !state.drained.Is(server) {
		t.Fatal("not drained")
	}
	if out := cliOK(t, addr, "drain", server); out != server+" was already drained\n" {
		t.Fatalf("drain again: %q", out)
	}
	if out := cliOK(t, addr, "servers"); !strings.Contains(out, server+"  drained") {
		t.Fatalf("servers: %q", out)
	}
	if out := cliOK(t, addr, "undrain", server); out != "undrained "+server+": it takes new users again\n" {
		t.Fatalf("undrain: %q", out)
	}
	if state.drained.Is(server) {
		t.Fatal("still drained")
	}
	if out := cliOK(t, addr, "undrain", server); out != server+" was not drained\n" {
		t.Fatalf("undrain again: %q", out)
	}
	if len(gatherStatus().Servers) == 0 {
		if out := cliOK(t, addr, "servers"); out != "no known servers\n" {
			t.Fatalf("servers: %q", out)
		}
	}
}

func TestCLICookie(t *testing.T) {
	prev := cookieRoutes
	t.Cleanup(func() { cookieRoutes = prev })
	var asked []string
	cookieRoutes = func(server, cookie string) []selection.CookieRoute {
		asked = append(asked, server+"|"+cookie)
		if cookie == "NOPE" {
			return nil
		}
		return []selection.CookieRoute{{Cookie: "SERVERID", Value: "web1", Mode: "insert"}}
	}
	addr := cliServer(t)

	rs := rows(cliOK(t, addr, "cookie", "10.0.0.11:8080", "--policy", "SERVERID"))
	want := [][]string{{"COOKIE", "VALUE", "MODE", "HEADER"}, {"SERVERID", "web1", "insert", "Cookie:", "SERVERID=web1"}}
	if !slices.EqualFunc(rs, want, slices.Equal) {
		t.Fatalf("cookie: %q", rs)
	}
	_, _, err := cliRun(t, addr, "cookie", "10.0.0.11:8080", "--policy", "NOPE")
	if err == nil || !strings.Contains(err.Error(), "HTTP 404") || !strings.Contains(err.Error(), `cookie named "NOPE"`) || strings.Contains(err.Error(), "{") {
		t.Fatalf("unknown policy: %v", err)
	}
	if want := []string{"10.0.0.11:8080|SERVERID", "10.0.0.11:8080|NOPE"}; !slices.Equal(asked, want) {
		t.Fatalf("asked %v, want %v", asked, want)
	}
}

func TestCLIPeers(t *testing.T) {
	addr := cliServer(t)
	if out := cliOK(t, addr, "peers"); out != "no peers\n" {
		t.Fatalf("peers: %q", out)
	}
	setPeerStatus(t, func() any { return []map[string]string{{"name": "node2"}} })
	if out := cliOK(t, addr, "peers"); !strings.Contains(out, `"name": "node2"`) {
		t.Fatalf("peers: %q", out)
	}
}

func TestCLIErrors(t *testing.T) {
	adminPublish(t, adminTable(t, "clients", sticktable.Config{Type: sticktable.KeyIP}, ""))
	addr := cliServer(t)

	_, _, err := cliRun(t, addr, "show", "nope")
	if err == nil || !strings.HasPrefix(err.Error(), `HTTP 404: no stick table named "nope"`) {
		t.Fatalf("unknown table: %v", err)
	}
	_, _, err = cliRun(t, addr, "set", "clients", "not-an-ip", "a:80")
	if err == nil || !strings.HasPrefix(err.Error(), "HTTP 400: ") || !strings.Contains(err.Error(), "not-an-ip") {
		t.Fatalf("bad key: %v", err)
	}
	for _, args := range [][]string{{"show"}, {"set", "clients", "k"}, {"delete", "clients"}, {"tables", "x"}, {"drain"}, {"set", "clients", "", "a:80"}} {
		if _, _, err := cliRun(t, addr, args...); err == nil {
			t.Errorf("caddy sticky %q succeeded", args)
		}
	}

	// Nothing listens on a port we just closed.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	_, _, err = cliRun(t, dead, "tables")
	if err == nil || !strings.Contains(err.Error(), "reaching Caddy's admin API at "+dead) {
		t.Fatalf("dead address: %v", err)
	}
}

// TestCLIConfigFlag finds the admin endpoint from a config file, as
// `caddy stop --config` does.
func TestCLIConfigFlag(t *testing.T) {
	adminPublish(t, adminTable(t, "fromconfig", sticktable.Config{}, ""))
	addr := cliServer(t)
	cfg := filepath.Join(t.TempDir(), "caddy.json")
	if err := os.WriteFile(cfg, []byte(`{"admin": {"listen": "`+addr+`"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	out := cliOK(t, "", "tables", "--config", cfg)
	if !strings.Contains(out, "fromconfig") {
		t.Fatalf("tables via --config: %q", out)
	}
}

func TestPathSegment(t *testing.T) {
	for in, want := range map[string]string{
		"plain":       "plain",
		"a/b":         "a%2Fb",
		"a b":         "a%20b",
		"100%":        "100%25",
		".":           "%2E",
		"..":          "%2E%2E",
		"a.b":         "a.b",
		"2001:db8::1": "2001:db8::1",
	} {
		if got := pathSegment(in); got != want {
			t.Errorf("pathSegment(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.1":    "10.0.0.1",
		"2001:db8::1": "2001:db8::1",
		"a b":         "'a b'",
		"it's":        `'it'\''s'`,
		"":            "''",
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %q, want %q", in, got, want)
		}
	}
}
