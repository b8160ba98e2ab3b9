package valkey

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	vk "github.com/valkey-io/valkey-go"

	"github.com/caddy-sticky/sticky/internal/redistest"
)

// clusterPort returns a free port whose cluster bus port (+10000) is free
// too.
func clusterPort(t *testing.T) int {
	t.Helper()
	for range 100 {
		p := redistest.FreePort(t)
		if p+10000 > 65535 {
			continue
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+10000))
		if err != nil {
			continue
		}
		l.Close()
		return p
	}
	t.Fatal("no port pair free for a cluster node")
	return 0
}

// startCluster starts three masters and joins them into one cluster.
func startCluster(t *testing.T) []string {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a three-node cluster; skipped with -short")
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		redistest.Binary(t) // fails under CI=true, skips elsewhere
		t.Skip("redis-cli not found; install it with: apt-get install -y redis-server")
	}
	var addrs []string
	for range 3 {
		p := clusterPort(t)
		redistest.Launch(t, p, false, []string{"--port", strconv.Itoa(p), "--cluster-enabled", "yes",
			"--cluster-node-timeout", "5000"})
		addrs = append(addrs, "127.0.0.1:"+strconv.Itoa(p))
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, a := range addrs {
		for {
			out, _ := exec.Command(cli, "-h", "127.0.0.1", "-p", strings.Split(a, ":")[1], "cluster", "info").Output()
			if strings.Contains(string(out), "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("cluster not ok on %s: %s", a, out)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return addrs
}

// Several addresses are a cluster: keys spread over the nodes, placements
// agree, invalidations arrive from every node, listing and clearing walk
// every node.
func TestCluster(t *testing.T) {
	addrs := startCluster(t)
	var urls []string
	for _, a := range addrs {
		urls = append(urls, "redis://"+a)
	}
	cfg := Config{Addresses: urls}
	a := newInstance(t, nil, "a", instanceOpts{cfg: cfg})
	b := newInstance(t, nil, "b", instanceOpts{cfg: cfg})
	if a.store.Stats().BreakerOpen || len(a.store.nodes()) != 3 {
		t.Fatalf("cluster client: breaker open %v, %d nodes", a.store.Stats().BreakerOpen, len(a.store.nodes()))
	}
	const n = 300
	for i := range n {
		if w, err := a.table.Place(bg(), a.key(t, fmtKey(i)), "s1"); err != nil || w != "s1" {
			t.Fatalf("place %d: %q %v", i, w, err)
		}
		if w, err := b.table.Place(bg(), b.key(t, fmtKey(i)), "s2"); err != nil || w != "s1" {
			t.Fatalf("racing place %d on b: %q %v", i, w, err)
		}
	}
	// Keys landed on every node.
	perNode := map[string]int{}
	for addr, c := range func() map[string]vk.Client { cp := a.store.client.Load(); return (*cp).Nodes() }() {
		n, _ := c.Do(context.Background(), c.B().Dbsize().Build()).AsInt64()
		perNode[addr] = int(n)
	}
	for addr, cnt := range perNode {
		if cnt == 0 {
			t.Fatalf("node %s holds no key: %v", addr, perNode)
		}
	}
	// Pins of keys on every node reach b.
	for i := range 30 {
		kb := b.key(t, fmtKey(i))
		eventually(t, 2*time.Second, "b caching", func() bool { return b.localServer(kb) == "s1" })
		if err := a.table.Pin(bg(), a.key(t, fmtKey(i)), "s3"); err != nil {
			t.Fatal(err)
		}
		eventually(t, 2*time.Second, fmt.Sprintf("pin of key %d invalidating b", i), func() bool { return b.localServer(kb) != "s1" })
	}
	seen := map[string]bool{}
	for cursor := ""; ; {
		entries, next, err := a.table.List(bg(), cursor, 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			seen[e.Key.String()] = true
		}
		if next == "" {
			break
		}
		cursor = next
	}
	if len(seen) != n {
		t.Fatalf("listed %d of %d keys", len(seen), n)
	}
	if cleared, err := b.table.Clear(bg(), "s3"); err != nil || cleared != 30 {
		t.Fatalf("clear s3 across nodes: %d %v", cleared, err)
	}
}
