package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The fault tests between real processes: a partition made with iptables
// on loopback, kill -9 and restart under traffic.

// partitionUID is the user the partitioned node runs as, so that its
// outgoing traffic can be matched with `-m owner --uid-owner`.
var partitionUID = 50000 + os.Getpid()%10000

// needIptables skips (or fails under CI=true) unless this process can
// manage iptables rules.
func needIptables(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("partition tests need root (iptables and running a node as another user)")
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("iptables is missing: apt-get install -y iptables")
		}
		t.Skip("iptables is missing: apt-get install -y iptables")
	}
	if out, err := exec.Command("iptables", "-n", "-L", "OUTPUT").CombinedOutput(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("iptables does not work here: %v: %s", err, out)
		}
		t.Skipf("iptables does not work here (no CAP_NET_ADMIN?): %v: %s", err, out)
	}
}

func iptables(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("iptables", args...).CombinedOutput(); err != nil {
		t.Fatalf("iptables %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// partition is a set of iptables rules on loopback that cuts one node's
// peer traffic from the others': a chain of this test's own, jumped to
// from OUTPUT for loopback only, holding rules on the test's peer ports
// and the partitioned node's uid. Heal (and test cleanup) removes it all.
type partition struct {
	t     *testing.T
	chain string
	on    bool
}

func newPartition(t *testing.T, cut *node, others []*node) *partition {
	p := &partition{t: t, chain: fmt.Sprintf("STICKY_T%d", os.Getpid())}
	iptables(t, "-N", p.chain)
	t.Cleanup(func() {
		p.heal()
		exec.Command("iptables", "-F", p.chain).Run()
		exec.Command("iptables", "-X", p.chain).Run()
	})
	for _, proto := range []string{"tcp", "udp"} {
		// nobody reaches the cut node's peer port
		iptables(t, "-A", p.chain, "-p", proto, "--dport", fmt.Sprint(cut.peerPort), "-j", "DROP")
		// the cut node reaches nobody's
		for _, o := range others {
			iptables(t, "-A", p.chain, "-m", "owner", "--uid-owner", fmt.Sprint(cut.uid),
				"-p", proto, "--dport", fmt.Sprint(o.peerPort), "-j", "DROP")
		}
	}
	return p
}

func (p *partition) cut() {
	iptables(p.t, "-I", "OUTPUT", "-o", "lo", "-j", p.chain)
	p.on = true
}

func (p *partition) heal() {
	if p.on {
		exec.Command("iptables", "-D", "OUTPUT", "-o", "lo", "-j", p.chain).Run()
		p.on = false
	}
}

// runAsBin caches, per test, the copy of the test binary a node running
// as another user executes.
var runAsBin sync.Map // *testing.T -> path

// runAs makes cmd run as uid (its folder handed over), with a copy of the
// test binary that uid can execute (the build folder is private to root).
func runAs(t *testing.T, cmd *exec.Cmd, uid int, dir string) {
	t.Helper()
	bin, ok := runAsBin.Load(t)
	if !ok {
		d, err := os.MkdirTemp("", "sticky-caddy-bin-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d); runAsBin.Delete(t) })
		os.Chmod(d, 0o755)
		src, err := os.ReadFile(cmd.Path)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(d, "caddy")
		if err := os.WriteFile(path, src, 0o755); err != nil {
			t.Fatal(err)
		}
		runAsBin.Store(t, path)
		bin = path
	}
	sharedBin := bin.(string)
	cmd.Path = sharedBin
	cmd.Args[0] = sharedBin
	// The uid has to reach its folder: open up the test's own folders
	// between it and the system's temporary folder, never that one
	// itself (or anything outside it).
	tmp := filepath.Clean(os.TempDir())
	for p := filepath.Clean(dir); strings.HasPrefix(p, tmp+string(filepath.Separator)); p = filepath.Dir(p) {
		os.Chmod(p, 0o755)
	}
	filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
		if err == nil {
			os.Lchown(path, uid, uid)
		}
		return nil
	})
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	cmd.Env = append(cmd.Env, "HOME="+dir)
}

// backendOf maps a response body to the backend's address.
func backendOf(bs []*backend, body string) string {
	for _, b := range bs {
		if b.Name == body {
			return b.Addr
		}
	}
	return ""
}

// nameOf maps a backend address to its name.
func nameOf(bs []*backend, addr string) string {
	for _, b := range bs {
		if b.Addr == addr {
			return b.Name
		}
	}
	return ""
}

func (n *node) pin(t *testing.T, key, server string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, fmt.Sprintf("http://127.0.0.1:%d/sticky/tables/users/entries/%s", n.adminPort, key),
		bytes.NewReader([]byte(`{"server":"`+server+`"}`)))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("pin %s on %s: %d %s", key, n.name, res.StatusCode, body)
	}
}

// entriesOrNil is entries for polling loops that may catch a node busy.
func (n *node) entriesOrNil() map[string]string {
	res, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/sticky/tables/users?limit=10000", n.adminPort))
	if err != nil {
		return nil
	}
	defer res.Body.Close()
	var page struct {
		Entries []struct{ Key, Server string }
	}
	if json.NewDecoder(res.Body).Decode(&page) != nil {
		return nil
	}
	out := map[string]string{}
	for _, e := range page.Entries {
		out[e.Key] = e.Server
	}
	return out
}

func sameEntries(a, b map[string]string) bool {
	if a == nil || b == nil || len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestPeersPartitionHeal is the partition of issue 9 between real Caddy
// processes: node3 is cut off with iptables; users are placed through both
// sides and keys pinned differently on both sides; right after the heal
// the cut-off side's users are sent to node2, which has not heard of them
// yet. No user may be moved for good, every node must end with the same
// table, and the time to converge once membership is back is recorded.
func TestPeersPartitionHeal(t *testing.T) {
	needIptables(t)
	bin := caddyCommand(t)
	bs := startBackends(t, 3)
	nodes := newNodes(t, 3)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	n3.uid = partitionUID
	n1.start(t, bin, n1.caddyfile(bs, nil, testSecret))
	n2.start(t, bin, n2.caddyfile(bs, []int{n1.peerPort}, testSecret))
	n3.start(t, bin, n3.caddyfile(bs, []int{n1.peerPort, n2.peerPort}, testSecret))
	for _, n := range nodes {
		n := n
		eventually(t, 20*time.Second, n.name+" sees two live peers", func() bool { return aliveCount(n.peers(t)) == 2 })
	}
	home := map[string]string{} // user -> backend address they were first placed on
	for i := range 30 {
		u := fmt.Sprint("before-", i)
		home[u] = backendOf(bs, nodes[i%3].request(t, u).Body)
	}
	eventually(t, 10*time.Second, "replication before the partition", func() bool { return len(n3.entriesOrNil()) == 30 })

	p := newPartition(t, n3, []*node{n1, n2})
	p.cut()
	start := time.Now()
	eventually(t, 60*time.Second, "both sides see the partition", func() bool {
		return aliveCount(n1.peersOrNil()) == 1 && aliveCount(n3.peersOrNil()) == 0
	})
	t.Logf("partition detected after %v", time.Since(start).Round(100*time.Millisecond))
	for i := range 40 {
		a, c := fmt.Sprint("a-user-", i), fmt.Sprint("c-user-", i)
		home[a] = backendOf(bs, n1.request(t, a).Body)
		home[c] = backendOf(bs, n3.request(t, c).Body)
	}
	pins := map[string]string{}
	for i := range 10 {
		k := fmt.Sprint("pinned-", i)
		n1.pin(t, k, bs[0].Addr)
		time.Sleep(5 * time.Millisecond)
		n3.pin(t, k, bs[1].Addr)
		pins[k] = bs[1].Addr
		if i%2 == 0 { // node1 pins again, later: the higher version
			time.Sleep(5 * time.Millisecond)
			n1.pin(t, k, bs[2].Addr)
			pins[k] = bs[2].Addr
		}
	}
	if got := n1.entriesOrNil()["c-user-0"]; got != "" {
		t.Fatalf("traffic crossed the partition: node1 knows c-user-0 (%s)", got)
	}

	p.heal()
	healed := time.Now()
	// Right after the heal the cut-off side's users reach node2, which
	// has not heard of them: it places them, and must not keep them.
	var stray atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for round := 0; ; round++ {
			for i := range 40 {
				select {
				case <-stop:
					return
				default:
				}
				c := fmt.Sprint("c-user-", i)
				req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/", n2.httpPort), nil)
				req.Header.Set("X-User", c)
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					continue
				}
				body, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if backendOf(bs, string(body)) != home[c] {
					stray.Add(1)
				}
			}
		}
	}()
	eventually(t, 60*time.Second, "membership back", func() bool {
		for _, n := range nodes {
			if aliveCount(n.peersOrNil()) != 2 {
				return false
			}
		}
		return true
	})
	back := time.Now()
	eventually(t, 60*time.Second, "all tables equal", func() bool {
		e1 := n1.entriesOrNil()
		return len(e1) == 30+80+10 && sameEntries(e1, n2.entriesOrNil()) && sameEntries(e1, n3.entriesOrNil())
	})
	converged := time.Now()
	close(stop)
	wg.Wait()
	t.Logf("membership back %v after the heal; tables equal %v after that (%v after the heal); %d requests to node2 went elsewhere before it learned",
		back.Sub(healed).Round(10*time.Millisecond), converged.Sub(back).Round(10*time.Millisecond),
		converged.Sub(healed).Round(10*time.Millisecond), stray.Load())

	moved := 0
	final := n1.entriesOrNil()
	for u, b := range home {
		if final[u] != b {
			moved++
			t.Errorf("%s was placed on %s, is now on %s", u, b, final[u])
		}
	}
	for k, v := range final {
		_, user := home[k]
		_, pinned := pins[k]
		if (!user && !pinned) || backendOf(bs, nameOf(bs, v)) == "" {
			t.Errorf("entry %s -> %s was never written", k, v)
		}
	}
	for k, want := range pins {
		if final[k] != want {
			t.Errorf("%s: pinned to %s, want %s (the later pin)", k, final[k], want)
		}
	}
	for _, n := range nodes {
		for i := range 40 {
			c := fmt.Sprint("c-user-", i)
			if got := backendOf(bs, n.request(t, c).Body); got != home[c] {
				t.Errorf("%s sent %s to %s, home %s", n.name, c, got, home[c])
			}
		}
	}
	t.Logf("%d users moved for good", moved)
}

// TestPeersKillUnderTraffic kills a node with SIGKILL while users are
// being served through all nodes, restarts it, and checks that no user
// moved and the restarted node catches up.
func TestPeersKillUnderTraffic(t *testing.T) {
	bs := startBackends(t, 3)
	nodes, bin := startCluster(t, bs)
	var mu sync.Mutex
	home := map[string]string{}
	for i := range 60 {
		u := fmt.Sprint("user-", i)
		home[u] = backendOf(bs, nodes[i%3].request(t, u).Body)
	}
	var moved, served atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 2 { // traffic through the nodes that stay up
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				default:
				}
				u := fmt.Sprint("user-", j%60)
				req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/", nodes[w].httpPort), nil)
				req.Header.Set("X-User", u)
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					continue
				}
				body, _ := io.ReadAll(res.Body)
				res.Body.Close()
				served.Add(1)
				mu.Lock()
				if backendOf(bs, string(body)) != home[u] {
					moved.Add(1)
				}
				mu.Unlock()
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	nodes[2].stop(true)
	for i := range 20 {
		u := fmt.Sprint("late-", i)
		b := backendOf(bs, nodes[i%2].request(t, u).Body)
		mu.Lock()
		home[u] = b
		mu.Unlock()
	}
	nodes[2].start(t, bin, nodes[2].caddyfile(bs, []int{nodes[0].peerPort, nodes[1].peerPort}, testSecret))
	eventually(t, 30*time.Second, "the restarted node catches up", func() bool {
		return sameEntries(nodes[0].entriesOrNil(), nodes[2].entriesOrNil()) && len(nodes[2].entriesOrNil()) == 80
	})
	close(stop)
	wg.Wait()
	for u, b := range home {
		if got := backendOf(bs, nodes[2].request(t, u).Body); got != b {
			t.Errorf("after kill -9 and restart %s went to %s, home %s", u, got, b)
		}
	}
	if moved.Load() != 0 {
		t.Fatalf("%d of %d requests under traffic reached another server than the user's", moved.Load(), served.Load())
	}
	t.Logf("%d requests served while a node was killed and restarted, none moved", served.Load())
}
