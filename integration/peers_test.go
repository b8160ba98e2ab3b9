package integration

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The peer tests run real Caddy processes built from this module: three
// nodes cannot share one process, whose tables are process-wide.

// caddyCommand returns the command that runs Caddy: this test binary.
func caddyCommand(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("runs Caddy processes; skipped with -short")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// node is one Caddy process of the cluster.
type node struct {
	name      string
	httpPort  int
	adminPort int
	peerPort  int
	dir       string
	cmd       *exec.Cmd
	cancel    context.CancelFunc
	done      chan struct{}
	// uid, when set, runs the process as that user (and group), so
	// firewall rules can match its traffic by owner; its folder is
	// handed to it.
	uid int
}

var testSecret = base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))

func (n *node) caddyfile(bs []*backend, join []int, secret string) string {
	var joins []string
	for _, p := range join {
		joins = append(joins, fmt.Sprintf("127.0.0.1:%d", p))
	}
	joinLine := ""
	if len(joins) > 0 {
		joinLine = "join " + strings.Join(joins, " ")
	}
	return fmt.Sprintf(`{
	admin 127.0.0.1:%d
	auto_https off
	persist_config off
	storage file_system %s
	log {
		level ERROR
	}
	sticky {
		peers cluster {
			name %s
			bind 127.0.0.1:%d
			%s
			secret %s
		}
		table users {
			type string
			peers cluster
		}
	}
}

http://127.0.0.1:%d {
	header >X-Outcome {http.sticky.outcome}
	header >X-Node %s
	reverse_proxy %s {
		lb_policy stick_table users {
			on {header.X-User}
			fallback random
		}
	}
}
`, n.adminPort, n.dir, n.name, n.peerPort, joinLine, secret, n.httpPort, n.name, upstreamList(bs))
}

// launch runs bin as Caddy with caddyfile, logging to the node's folder;
// the log is printed if the test fails.
func (n *node) launch(t *testing.T, bin, caddyfile string) {
	t.Helper()
	path := filepath.Join(n.dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "run", "--config", path, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), runAsCaddyEnv+"=1", "XDG_CONFIG_HOME="+n.dir, "XDG_DATA_HOME="+n.dir)
	if n.uid != 0 {
		runAs(t, cmd, n.uid, n.dir)
	}
	logf, err := os.Create(filepath.Join(n.dir, "caddy.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n.cmd, n.cancel, n.done = cmd, cancel, make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(n.done) }()
	t.Cleanup(func() {
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(n.dir, "caddy.log"))
			t.Logf("%s log:\n%s", n.name, log)
		}
	})
}

// start launches the node and waits for its admin API and its site: Caddy
// serves the admin API before its HTTP app listens.
func (n *node) start(t *testing.T, bin, caddyfile string) {
	t.Helper()
	n.launch(t, bin, caddyfile)
	up := func(url string) bool {
		res, err := http.Get(url)
		if err != nil {
			return false
		}
		res.Body.Close()
		return true
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if up(fmt.Sprintf("http://127.0.0.1:%d/sticky/tables", n.adminPort)) &&
			(n.httpPort == 0 || up(fmt.Sprintf("http://127.0.0.1:%d/", n.httpPort))) {
			return
		}
		select {
		case <-n.done:
			log, _ := os.ReadFile(filepath.Join(n.dir, "caddy.log"))
			t.Fatalf("%s exited at start:\n%s", n.name, log)
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Fatalf("%s did not start", n.name)
}

// stop ends the process: gracefully (it leaves the group) or by kill.
func (n *node) stop(kill bool) {
	if n.cmd == nil || n.cmd.Process == nil {
		return
	}
	if kill {
		_ = n.cmd.Process.Kill()
	} else {
		_ = n.cmd.Process.Signal(os.Interrupt)
	}
	select {
	case <-n.done:
	case <-time.After(15 * time.Second):
		n.cancel()
		<-n.done
	}
	n.cmd = nil
}

func newNodes(t *testing.T, count int) []*node {
	nodes := make([]*node, count)
	for i := range nodes {
		nodes[i] = &node{
			name:      fmt.Sprintf("node%d", i+1),
			httpPort:  freePort(t),
			adminPort: freePort(t),
			peerPort:  freePort(t),
			dir:       t.TempDir(),
		}
		n := nodes[i]
		t.Cleanup(func() { n.stop(false) })
	}
	return nodes
}

func (n *node) request(t *testing.T, user string) response {
	t.Helper()
	return as(t, n.httpPort, user, "")
}

// entries returns the node's table as key -> server.
func (n *node) entries(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	after := ""
	for {
		res, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/sticky/tables/users?limit=10000&after=%s", n.adminPort, after))
		if err != nil {
			t.Fatal(err)
		}
		var page struct {
			Entries []struct{ Key, Server string }
			More    bool
			Next    string
		}
		err = json.NewDecoder(res.Body).Decode(&page)
		res.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page.Entries {
			out[e.Key] = e.Server
		}
		if !page.More {
			return out
		}
		after = page.Next
	}
}

func (n *node) peers(t *testing.T) []struct {
	Name, State string
} {
	t.Helper()
	res, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/sticky/peers", n.adminPort))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	var groups []struct {
		Members []struct{ Name, State string }
	}
	if err := json.Unmarshal(body, &groups); err != nil {
		t.Fatalf("peers: %v: %s", err, body)
	}
	if len(groups) == 0 {
		return nil
	}
	var out []struct{ Name, State string }
	for _, m := range groups[0].Members {
		out = append(out, struct{ Name, State string }{m.Name, m.State})
	}
	return out
}

// peersOrNil is peers for goroutines, which must not fail the test.
func (n *node) peersOrNil() []struct{ Name, State string } {
	res, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/sticky/peers", n.adminPort))
	if err != nil {
		return nil
	}
	defer res.Body.Close()
	var groups []struct {
		Members []struct{ Name, State string }
	}
	if json.NewDecoder(res.Body).Decode(&groups) != nil || len(groups) == 0 {
		return nil
	}
	return groups[0].Members
}

func aliveCount(ms []struct{ Name, State string }) int {
	n := 0
	for _, m := range ms {
		if m.State == "alive" {
			n++
		}
	}
	return n
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("not within %s: %s", within, what)
}

func startCluster(t *testing.T, bs []*backend) ([]*node, string) {
	bin := caddyCommand(t)
	nodes := newNodes(t, 3)
	nodes[0].start(t, bin, nodes[0].caddyfile(bs, nil, testSecret))
	nodes[1].start(t, bin, nodes[1].caddyfile(bs, []int{nodes[0].peerPort}, testSecret))
	nodes[2].start(t, bin, nodes[2].caddyfile(bs, []int{nodes[0].peerPort, nodes[1].peerPort}, testSecret))
	for _, n := range nodes {
		n := n
		eventually(t, 20*time.Second, n.name+" sees two live peers", func() bool { return aliveCount(n.peers(t)) == 2 })
	}
	return nodes, bin
}

func TestPeersThreeNodes(t *testing.T) {
	bs := startBackends(t, 3)
	start := time.Now()
	phase := func(what string) { t.Logf("%6.1fs %s", time.Since(start).Seconds(), what) }
	nodes, bin := startCluster(t, bs)
	phase("cluster up")

	// A client that round-robins over the instances sees each user on
	// one backend.
	const users = 60
	home := map[string]string{}
	for i := 0; i < users; i++ {
		u := fmt.Sprintf("user%d", i)
		home[u] = nodes[i%3].request(t, u).Body
	}
	for _, n := range nodes {
		n := n
		eventually(t, 10*time.Second, n.name+" holds every user", func() bool { return len(n.entries(t)) == users })
	}
	for round := 0; round < 3; round++ {
		for i := 0; i < users; i++ {
			u := fmt.Sprintf("user%d", i)
			n := nodes[(i+round+1)%3]
			if r := n.request(t, u); r.Body != home[u] {
				t.Fatalf("%s: %s through the first node, %s through %s", u, home[u], r.Body, n.name)
			}
		}
	}

	phase("round-robin users checked")
	// Racing first requests: the same new user hits two nodes at once;
	// the nodes converge on one server and every later request goes there.
	for i := 0; i < 10; i++ {
		u := fmt.Sprintf("racer%d", i)
		var wg sync.WaitGroup
		for _, n := range nodes[:2] {
			wg.Add(1)
			go func(n *node) { defer wg.Done(); n.request(t, u) }(n)
		}
		wg.Wait()
		var agreed string
		eventually(t, 10*time.Second, u+" converges on one server", func() bool {
			seen := map[string]bool{}
			for _, n := range nodes {
				seen[n.entries(t)[u]] = true
			}
			if len(seen) != 1 || seen[""] {
				return false
			}
			for s := range seen {
				agreed = s
			}
			return true
		})
		want := ""
		for _, b := range bs {
			if b.Addr == agreed {
				want = b.Name
			}
		}
		for _, n := range nodes {
			for j := 0; j < 3; j++ {
				if got := n.request(t, u).Body; got != want {
					t.Fatalf("%s: converged on %s but %s sent it to %s", u, want, n.name, got)
				}
			}
		}
	}

	phase("racers converged")
	// A node killed and restarted catches up without anybody else
	// restarting.
	nodes[2].stop(true)
	for i := 0; i < 20; i++ {
		u := fmt.Sprintf("late%d", i)
		home[u] = nodes[0].request(t, u).Body
	}
	nodes[2].start(t, bin, nodes[2].caddyfile(bs, []int{nodes[0].peerPort, nodes[1].peerPort}, testSecret))
	total := len(nodes[0].entries(t))
	eventually(t, 20*time.Second, "the restarted node catches up", func() bool { return len(nodes[2].entries(t)) == total })
	for u, b := range home {
		if got := nodes[2].request(t, u).Body; got != b {
			t.Fatalf("after the restart %s went to %s, was %s", u, got, b)
		}
	}

	phase("restarted node caught up")
	// A reload during traffic keeps the group: the others never see this
	// node leave.
	cfg := adapt(t, nodes[0].caddyfile(bs, nil, testSecret))
	stopWatch := make(chan struct{})
	sawLeave := make(chan string, 1)
	go func() {
		for {
			select {
			case <-stopWatch:
				return
			default:
			}
			for _, m := range nodes[1].peersOrNil() {
				if m.Name == "node1" && m.State != "alive" {
					select {
					case sawLeave <- m.State:
					default:
					}
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	for i := 0; i < 5; i++ {
		res := postJSON(t, fmt.Sprintf("http://127.0.0.1:%d/load", nodes[0].adminPort), cfg, map[string]string{"Cache-Control": "must-revalidate"})
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("reload: %d %s", res.StatusCode, body)
		}
		if r := nodes[0].request(t, "user1"); r.Body != home["user1"] {
			t.Fatalf("after a reload user1 went to %s", r.Body)
		}
	}
	time.Sleep(500 * time.Millisecond)
	close(stopWatch)
	phase("reloads done")
	select {
	case s := <-sawLeave:
		t.Errorf("a reload made node2 see node1 as %s", s)
	default:
	}
}

func TestPeersWrongSecretGetsNothing(t *testing.T) {
	bs := startBackends(t, 2)
	nodes, bin := startCluster(t, bs)
	for i := 0; i < 10; i++ {
		nodes[0].request(t, fmt.Sprintf("known%d", i))
	}
	intruder := newNodes(t, 1)[0]
	intruder.name = "intruder"
	wrong := base64.StdEncoding.EncodeToString([]byte("fedcba9876543210fedcba9876543210"))
	intruder.start(t, bin, intruder.caddyfile(bs, []int{nodes[0].peerPort}, wrong))
	for i := 0; i < 10; i++ {
		intruder.request(t, fmt.Sprintf("injected%d", i))
	}
	time.Sleep(3 * time.Second)
	if got := intruder.entries(t); len(got) != 10 {
		t.Errorf("the intruder's table has %d entries, want only its own 10: %v", len(got), got)
	}
	for k := range intruder.entries(t) {
		if strings.HasPrefix(k, "known") {
			t.Errorf("the intruder learned %s", k)
		}
	}
	for _, n := range nodes {
		for k := range n.entries(t) {
			if strings.HasPrefix(k, "injected") {
				t.Errorf("%s accepted %s from the intruder", n.name, k)
			}
		}
		for _, m := range n.peers(t) {
			if m.Name == "intruder" && m.State == "alive" {
				t.Errorf("%s lists the intruder as a live member", n.name)
			}
		}
	}
}

// TestPeersExample runs examples/peers as the README says: the backends
// and three nodes, each its own Caddy process, and checks that a user stuck
// through one node is sent to the same backend by the others.
func TestPeersExample(t *testing.T) {
	bin := caddyCommand(t)
	ports := map[string]int{}
	for _, p := range []string{"2019", "2020", "2021", "8081", "8082", "8083", "7946", "7947", "7948", "9301", "9302", "9303"} {
		ports[p] = freePort(t)
	}
	load := func(file string) string {
		src, err := os.ReadFile(filepath.Join("../examples/peers", file))
		if err != nil {
			t.Fatal(err)
		}
		return replacePorts(string(src), ports)
	}
	t.Setenv("STICKY_PEERS_SECRET", testSecret)

	backends := &node{name: "backends", dir: t.TempDir()}
	t.Cleanup(func() { backends.stop(false) })
	backends.startNoAdmin(t, bin, load("backends.Caddyfile"), ports["9301"])

	var nodes []*node
	for i := 1; i <= 3; i++ {
		n := &node{
			name:      fmt.Sprintf("node%d", i),
			httpPort:  ports[fmt.Sprint(8080+i)],
			adminPort: ports[fmt.Sprint(2018+i)],
			dir:       t.TempDir(),
		}
		t.Cleanup(func() { n.stop(false) })
		n.start(t, bin, load(fmt.Sprintf("node%d.Caddyfile", i)))
		nodes = append(nodes, n)
	}
	for _, n := range nodes {
		n := n
		eventually(t, 20*time.Second, n.name+" sees two live peers", func() bool { return aliveCount(n.peers(t)) == 2 })
	}
	for i := 0; i < 12; i++ {
		u := fmt.Sprintf("visitor%d", i)
		first := nodes[i%3].request(t, u).Body
		if !strings.HasSuffix(first, "answered\n") {
			t.Fatalf("%s got %q", u, first)
		}
		for _, n := range nodes {
			n := n
			eventually(t, 10*time.Second, u+" known on "+n.name, func() bool { return n.entries(t)[u] != "" })
			if got := n.request(t, u).Body; got != first {
				t.Fatalf("%s: %q through node%d, %q through %s", u, first, i%3+1, got, n.name)
			}
		}
	}
}

// startNoAdmin starts a Caddy without an admin endpoint and waits for port.
func (n *node) startNoAdmin(t *testing.T, bin, caddyfile string, port int) {
	t.Helper()
	n.launch(t, bin, caddyfile)
	eventually(t, 30*time.Second, "backends listening", func() bool {
		res, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err != nil {
			return false
		}
		res.Body.Close()
		return true
	})
}
