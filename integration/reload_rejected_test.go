package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// rejectedSite is the running config of the rejected-reload tests: a table
// of size 1000 behind a stick_table policy; extraGlobal and extraSite are
// what a bad reload adds.
func rejectedSite(t *testing.T, adminPort, port int, bs []*backend, table, extraGlobal, extraSite string) string {
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
%s
		}
%s
	}
}

http://127.0.0.1:%d {
	reverse_proxy %s {
		lb_policy stick_table t {
			on {header.X-Client}
			fallback round_robin
		}
	}
}
%s
`, adminPort, t.TempDir(), table, extraGlobal, port, upstreamList(bs), extraSite)
}

// postLoad sends a config to the admin API's /load, forcing Caddy to
// consider it even when identical, and returns the status.
func postLoad(t *testing.T, adminPort int, cfg []byte) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", fmt.Sprintf("http://127.0.0.1:%d/load", adminPort), bytes.NewReader(cfg))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Cache-Control", "must-revalidate")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(res.Body)
	return res.StatusCode, b.String()
}

// snapshotAPI reads what the admin API shows of the table: its settings and
// every entry.
func snapshotAPI(t *testing.T, adminPort int) (apiTable, map[string]string) {
	t.Helper()
	var tables []apiTable
	adminJSON(t, adminPort, "GET", "/sticky/tables", "", 200, &tables)
	if len(tables) != 1 {
		t.Fatalf("tables: %+v", tables)
	}
	entries := map[string]string{}
	after := ""
	for {
		var page apiPage
		adminJSON(t, adminPort, "GET", "/sticky/tables/t?limit=1000&after="+after, "", 200, &page)
		for _, e := range page.Entries {
			entries[e.Key] = e.Server
			after = e.Key
		}
		if !page.More {
			break
		}
	}
	return tables[0], entries
}

// TestRejectedReloadsChangeNothing: a running table of size 1000 with 200
// users, then reloads that also say size 50 and nopurge but that Caddy
// rejects, each for another reason. After each, the admin API shows the
// same table and the same entries, and new users are still stored.
func TestRejectedReloadsChangeNothing(t *testing.T) {
	bs := startBackends(t, 2)
	adminPort, port := freePort(t), freePort(t)
	good := "\t\t\ttype ip\n\t\t\tsize 1000"
	bad := "\t\t\ttype ip\n\t\t\tsize 50\n\t\t\tnopurge"
	loadCaddy(t, adapt(t, rejectedSite(t, adminPort, port, bs, good, "", "")))
	for i := 0; i < 200; i++ {
		asClient(t, port, fmt.Sprintf("10.7.%d.%d", i/200, i%200+1))
	}
	table, entries := snapshotAPI(t, adminPort)
	if table.Used != 200 || len(entries) != 200 {
		t.Fatalf("set-up: %d used, %d listed", table.Used, len(entries))
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := busy.Addr().(*net.TCPAddr).Port
	secret := "MDEyMzQ1Njc4OWFiY2RlZg=="
	peerPort := freePort(t)

	dupPort := freePort(t)
	cases := []struct {
		name, global, site string
		// mutate edits the adapted JSON, for configs the Caddyfile
		// adapter itself would refuse
		mutate func(cfg map[string]any)
	}{
		{name: "a later handler that cannot provision", site: fmt.Sprintf(`http://127.0.0.1:%d {
	reverse_proxy 127.0.0.1:1 {
		lb_policy stick_table missing
	}
}`, freePort(t))},
		{name: "a bad later table", global: "\t\ttable z {\n\t\t\tpeers nowhere\n\t\t}"},
		{name: "a short peer secret", mutate: func(cfg map[string]any) {
			st := cfg["apps"].(map[string]any)["sticky"].(map[string]any)
			st["peers"] = map[string]any{"c": map[string]any{"name": "n1", "bind": fmt.Sprintf("127.0.0.1:%d", peerPort), "secrets": []string{"c2hvcnQ="}}}
			st["tables"].(map[string]any)["t"].(map[string]any)["peers"] = "c"
		}},
		{name: "a listener already in use (an app's Start fails)", site: fmt.Sprintf("http://127.0.0.1:%d {\n\trespond ok\n}", busyPort)},
		{name: "a duplicate listener", mutate: func(cfg map[string]any) {
			servers := cfg["apps"].(map[string]any)["http"].(map[string]any)["servers"].(map[string]any)
			addr := fmt.Sprintf("127.0.0.1:%d", dupPort)
			servers["dup_a"] = map[string]any{"listen": []string{addr}}
			servers["dup_b"] = map[string]any{"listen": []string{addr}}
		}},
		{name: "a peer group whose Start would rotate the secret, next to a failing listener",
			global: fmt.Sprintf("\t\tpeers c {\n\t\t\tname n1\n\t\t\tbind 127.0.0.1:%d\n\t\t\tsecret %s\n\t\t}", peerPort, secret),
			site:   fmt.Sprintf("http://127.0.0.1:%d {\n\trespond ok\n}", busyPort)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for attempt := 0; attempt < 4; attempt++ { // Caddy starts apps in random order
				cfg := adapt(t, rejectedSite(t, adminPort, port, bs, bad, tc.global, tc.site))
				if tc.mutate != nil {
					var m map[string]any
					if err := json.Unmarshal(cfg, &m); err != nil {
						t.Fatal(err)
					}
					tc.mutate(m)
					cfg = mustJSON(t, m)
				}
				status, body := postLoad(t, adminPort, cfg)
				if status == 200 {
					t.Fatalf("the bad config was accepted")
				}
				if !strings.Contains(body, "error") {
					t.Fatalf("status %d without an error: %s", status, body)
				}
				gotTable, gotEntries := snapshotAPI(t, adminPort)
				if gotTable.Size != 1000 || gotTable.NoPurge || gotTable.Used != table.Used {
					t.Fatalf("after the rejected reload the table is %+v, was %+v", gotTable, table)
				}
				if len(gotEntries) != len(entries) {
					t.Fatalf("entries: %d, were %d", len(gotEntries), len(entries))
				}
				for k, v := range entries {
					if gotEntries[k] != v {
						t.Fatalf("entry %s: %q, was %q", k, gotEntries[k], v)
					}
				}
				// new users are still stored
				user := fmt.Sprintf("10.8.%d.%d", len(tc.name)%200, attempt+1)
				asClient(t, port, user)
				var page apiPage
				adminJSON(t, adminPort, "GET", "/sticky/tables/t?key="+user, "", 200, &page)
				if len(page.Entries) != 1 {
					t.Fatalf("a new user was not stored after the rejected reload")
				}
				entries[user] = page.Entries[0].Server
				table.Used++
			}
		})
	}
	var peersNow []struct{ Group string }
	adminJSON(t, adminPort, "GET", "/sticky/peers", "", 200, &peersNow)
	if len(peersNow) != 0 {
		t.Fatalf("a rejected config left a peer group running: %+v", peersNow)
	}
}

// TestRejectedReloadKeepsNodeInCluster: a reload that carries a new peer
// secret but fails (a listener already in use) must not rotate the running
// group's key, or the node would drop out of its cluster. Apps start in
// random order, so the reload is tried several times: with the old code,
// any attempt where the sticky app started first rotated the key.
func TestRejectedReloadKeepsNodeInCluster(t *testing.T) {
	bs := startBackends(t, 2)
	nodes, _ := startCluster(t, bs)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	otherSecret := "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="
	n1 := nodes[0]
	bad := n1.caddyfile(bs, nil, otherSecret) + fmt.Sprintf("\nhttp://127.0.0.1:%d {\n\trespond ok\n}\n", busy.Addr().(*net.TCPAddr).Port)
	for attempt := 0; attempt < 6; attempt++ {
		if status, _ := postLoad(t, n1.adminPort, adapt(t, bad)); status == 200 {
			t.Fatal("the bad config was accepted")
		}
	}
	// a node whose key changed is declared dead by the others within a few
	// seconds; it must stay alive, and replication must still work
	deadline := time.Now().Add(6 * time.Second)
	for time.Now().Before(deadline) {
		for _, n := range nodes {
			if got := aliveCount(n.peers(t)); got != 2 {
				t.Fatalf("%s sees %d live peers after the rejected reload", n.name, got)
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	b := nodes[1].request(t, "after-rejected-reload").Body
	eventually(t, 5*time.Second, "node1 learns node2's new user", func() bool {
		return n1.entries(t)["after-rejected-reload"] != ""
	})
	if got := n1.request(t, "after-rejected-reload").Body; got != b {
		t.Fatalf("node1 sends the user to %s, node2 sent it to %s", got, b)
	}
}
