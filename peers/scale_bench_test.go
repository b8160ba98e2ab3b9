package peers

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-sticky/sticky/sticktable"
)

// Scale benchmarks: how live replication and anti-entropy cost grows with
// the number of nodes and the size of the tables. All nodes run in this
// process on 127.0.0.1 with real memberlist sockets and encryption, so the
// machine's cores are shared by every node: CPU is the process's CPU time
// divided by the node count.

// processCPU is the CPU time (user + system) this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// udpReceiveDrops is the kernel's count of UDP datagrams dropped because a
// socket's receive buffer was full (machine-wide; on loopback during a
// benchmark, nearly all ours), or 0 where /proc/net/snmp is missing.
func udpReceiveDrops() uint64 {
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return 0
	}
	var names []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == "RcvbufErrors" && i < len(f) {
				v, _ := strconv.ParseUint(f[i], 10, 64)
				return v
			}
		}
	}
	return 0
}

// fleet is a set of in-process nodes started for one benchmark and closed,
// all at once, at its end.
type fleet struct {
	nodes []*testNode
	// How the start went: how long until every node listed every other
	// one as alive, how many nodes still missed a member fleetWarmUp
	// after the last node started, and the membership repairs the nodes
	// ran (Stats.MembershipRepairs).
	complete time.Duration
	behind   int
	repairs  uint64
}

// fleetWarmUp is how long a starting fleet may take before its nodes
// start writing (see startFleetVia).
const fleetWarmUp = 5 * time.Second

// startFleet starts n nodes on free 127.0.0.1 ports, each with a
// "sessions" integer table, and waits until every node lists every other
// one as alive. Every node joins through the first, as a fleet configured
// with one seed does.
func startFleet(b *testing.B, n int, opts func(name string) options) *fleet {
	return startFleetVia(b, n, func(int) int { return 0 }, opts)
}

// startFleetVia is startFleet with node i joining through node via(i)
// (< i). Binding is retried: port 0 picks a free TCP port, and the UDP
// port of the same number can be taken.
//
// memberlist spreads a new member by gossip, which can miss a node during
// a burst of joins; the node then learns of the member when it refuses a
// message from it (the membership repair, repair.go), or at memberlist's
// periodic push/pull, which the benchmarks turn off. A fleet that serves
// traffic sends such messages all the time; one that only waits may not
// (a member whose name sorts after the node's does not offer it digests
// when it learns of it). So if membership is not complete fleetWarmUp
// after the last node started, every node writes one key (outside the
// range the convergence benchmark measures) per second until it is.
func startFleetVia(b *testing.B, n int, via func(i int) int, opts func(name string) options) *fleet {
	b.Helper()
	f := &fleet{}
	b.Cleanup(f.close)
	for i := range n {
		name := fmt.Sprintf("node%d", i+1)
		var join []string
		if i > 0 {
			join = []string{f.nodes[via(i)].g.Addr()}
		}
		var g *Group
		var err error
		for try := 0; try < 5; try++ {
			g, err = newGroup(Config{Name: name, Bind: "127.0.0.1:0", Join: join, Secrets: []string{testSecret}}, testLogger(b), opts(name))
			if err == nil || !strings.Contains(err.Error(), "bind") {
				break
			}
		}
		if err != nil {
			b.Fatal(err)
		}
		t, err := sticktable.New(sticktable.Config{Type: sticktable.KeyInteger, Size: 1 << 16, Expire: 10 * time.Minute})
		if err != nil {
			g.Close()
			b.Fatal(err)
		}
		g.Attach("sessions", t)
		f.nodes = append(f.nodes, &testNode{g: g, t: t})
	}
	began := time.Now()
	deadline := began.Add(120 * time.Second)
	nextWrite, warmKey := began.Add(fleetWarmUp), uint64(1)<<40
	for {
		ready := 0
		for _, nd := range f.nodes {
			if nd.g.ml.NumMembers() == n && len(nd.g.targets()) == n-1 {
				ready++
			}
		}
		if ready == n {
			f.complete = time.Since(began)
			break
		}
		if time.Now().After(nextWrite) {
			if nextWrite.Equal(began.Add(fleetWarmUp)) {
				f.behind = n - ready
			}
			nextWrite = time.Now().Add(time.Second)
			for _, nd := range f.nodes {
				k, _ := nd.t.ParseKey(strconv.FormatUint(warmKey, 10))
				warmKey++
				if _, err := nd.t.StoreKey(k, "10.0.0.1:8080"); err != nil {
					b.Fatal(err)
				}
			}
		}
		if time.Now().After(deadline) {
			for _, nd := range f.nodes {
				if nd.g.ml.NumMembers() != n || len(nd.g.targets()) != n-1 {
					var states []string
					for _, m := range nd.g.Members() {
						if m.State != "alive" {
							states = append(states, m.Name+":"+m.State)
						}
					}
					var mlStates []string
					for _, m := range nd.g.ml.Members() {
						if m.State != 0 {
							mlStates = append(mlStates, fmt.Sprintf("%s:%d", m.Name, m.State))
						}
					}
					b.Logf("%s: memberlist members %d, alive targets %d, known %d; not alive here: %v; memberlist not alive: %v",
						nd.g.Name(), nd.g.ml.NumMembers(), len(nd.g.targets()), len(nd.g.Members()), states, mlStates)
				}
			}
			b.Fatalf("membership: %d of %d nodes see all %d members after 120s", ready, n, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	f.repairs = f.sum(func(g *Group) uint64 { return g.Stats().MembershipRepairs })
	if f.behind > 0 || f.repairs > 0 {
		b.Logf("membership: %d of %d nodes missed a member %v after the start; complete after %v, %d membership repairs",
			f.behind, n, fleetWarmUp, f.complete.Round(time.Millisecond), f.repairs)
	}
	return f
}

// BenchmarkFleetStart starts n nodes at once (each joining through the
// first, or through a random earlier node, which makes gossip miss more)
// and reports how long until every node listed every other one as alive,
// how many nodes still missed a member 5 s after the start, and how many
// membership repairs ran. Probes and push/pull at memberlist's defaults
// apart from the periodic push/pull, which is off (an hour), as in the
// convergence benchmark.
//
//	go test -run '^$' -bench BenchmarkFleetStart -benchtime 3x ./peers/
func BenchmarkFleetStart(b *testing.B) {
	for _, n := range []int{50} {
		for _, join := range []string{"seed", "random"} {
			b.Run(fmt.Sprintf("nodes=%d/join=%s", n, join), func(b *testing.B) {
				via := func(int) int { return 0 }
				if join == "random" {
					r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
					via = func(i int) int { return r.IntN(i) }
				}
				var complete time.Duration
				var behind, repairs, missed int
				for range b.N {
					goroutines := runtime.NumGoroutine()
					f := startFleetVia(b, n, via, func(string) options {
						o := testOpts()
						o.pushPull = time.Hour
						o.probe = 0
						return o
					})
					complete += f.complete
					behind += f.behind
					repairs += int(f.repairs)
					if f.behind > 0 {
						missed++
					}
					f.close()
					checkGoroutines(b, goroutines)
				}
				b.ReportMetric(complete.Seconds()/float64(b.N), "complete-s")
				b.ReportMetric(float64(behind)/float64(b.N), "nodes-behind-at-5s")
				b.ReportMetric(float64(missed), "starts-with-a-miss")
				b.ReportMetric(float64(repairs)/float64(b.N), "repairs")
			})
		}
	}
}

// close closes every node in parallel (each Close waits up to 2 s for its
// leave to spread; one after the other, 50 nodes would take minutes).
func (f *fleet) close() {
	var wg sync.WaitGroup
	for _, nd := range f.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nd.g.Close()
			nd.t.Close()
		}()
	}
	wg.Wait()
	f.nodes = nil
}

// sum adds up one counter over the nodes.
func (f *fleet) sum(fn func(*Group) uint64) uint64 {
	var n uint64
	for _, nd := range f.nodes {
		n += fn(nd.g)
	}
	return n
}

// deliveryRecorder measures, for every write, how long until each other
// node applied it: writes are integer keys numbered from 0, stamped when
// written; each node's apply hook looks the stamp up. Hooks run on the
// node's memberlist handler goroutines, so each node records into its own
// slice under its own lock.
type deliveryRecorder struct {
	written []atomic.Int64 // unix nanoseconds by key
	nodes   map[string]*nodeDeliveries
	applied atomic.Int64
}

type nodeDeliveries struct {
	seen []atomic.Bool // first apply only (anti-entropy may re-apply)
	mu   sync.Mutex
	lat  []time.Duration
}

func newDeliveryRecorder(total, n int) *deliveryRecorder {
	r := &deliveryRecorder{written: make([]atomic.Int64, total), nodes: map[string]*nodeDeliveries{}}
	for i := range n {
		r.nodes[fmt.Sprintf("node%d", i+1)] = &nodeDeliveries{seen: make([]atomic.Bool, total)}
	}
	return r
}

func (r *deliveryRecorder) hook(node string) func(string, sticktable.Change) {
	nd := r.nodes[node]
	return func(_ string, c sticktable.Change) {
		// Only another node's write arriving here counts: anti-entropy
		// echoing a node's own entry back is not a delivery.
		if c.Op != sticktable.OpStore || c.Node == node {
			return
		}
		var kb [8]byte
		seq := binary.BigEndian.Uint64(c.Key.AppendBytes(kb[:0]))
		if seq >= uint64(len(r.written)) || nd.seen[seq].Swap(true) {
			return
		}
		at := r.written[seq].Load()
		if at == 0 {
			return
		}
		d := time.Duration(time.Now().UnixNano() - at)
		nd.mu.Lock()
		nd.lat = append(nd.lat, d)
		nd.mu.Unlock()
		r.applied.Add(1)
	}
}

func (r *deliveryRecorder) latencies() []time.Duration {
	var all []time.Duration
	for _, nd := range r.nodes {
		nd.mu.Lock()
		all = append(all, nd.lat...)
		nd.mu.Unlock()
	}
	slices.Sort(all)
	return all
}

// quantile is the p-quantile of the want deliveries expected, of which the
// sorted lat arrived: one that did not arrive counts as never (+Inf).
func quantile(lat []time.Duration, want int, p float64) float64 {
	i := min(want-1, int(float64(want)*p))
	if i >= len(lat) || i < 0 {
		return math.Inf(1)
	}
	return float64(lat[i]) / 1e6
}

// BenchmarkConvergence writes a paced, fleet-wide rate of new keys, spread
// evenly over the nodes, for a few seconds, then waits (at most
// convergenceDrain) for every node to have applied every other node's
// writes. It reports how long each write took to be applied on each other
// node (p50, p99 and max over all expected deliveries; one that never
// arrived counts as +Inf), the share delivered, CPU time per node per
// 1,000 updates received and as a share of one core per node (process CPU
// divided by nodes: they share the process), replication messages and
// wire bytes sent per node per second (the group's Stats), and the
// membership churn (leaves), queue drops and send errors, changes refused
// from non-members and the membership repairs they caused, seen meanwhile.
// Anti-entropy is off (pushPull an hour): this measures live replication.
//
//	go test -run '^$' -bench BenchmarkConvergence -benchtime 1x ./peers/
func BenchmarkConvergence(b *testing.B) {
	for _, n := range []int{3, 10, 25, 50} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			for _, rate := range []int{1000, 10000} {
				b.Run(fmt.Sprintf("rate=%d", rate), func(b *testing.B) { benchConvergence(b, n, rate) })
			}
		})
	}
}

const (
	convergenceSeconds = 3
	convergenceDrain   = 20 * time.Second
)

func benchConvergence(b *testing.B, n, rate int) {
	goroutines := runtime.NumGoroutine()
	total := rate * convergenceSeconds
	rec := newDeliveryRecorder(total, n)
	f := startFleet(b, n, func(name string) options {
		o := testOpts()
		o.pushPull = time.Hour // live replication only
		// memberlist's default failure detection (1 s probes): the test
		// speed-up makes a busy node look failed, and the churn that
		// follows would measure the detector's settings, not
		// replication. Churn at the default settings is reported.
		o.probe = 0
		o.onApply = rec.hook(name)
		return o
	})
	nodes := f.nodes
	// Let the join exchanges (and their follow-ups) finish: this
	// measures the steady state.
	time.Sleep(followUpDelay + time.Second)

	// The fleet's cost with nothing to replicate: memberlist's probes
	// and gossip, the flush tickers.
	idle0, idleAt := processCPU(), time.Now()
	time.Sleep(time.Second)
	idle := float64(processCPU()-idle0) / float64(time.Since(idleAt)) / float64(n) * 100

	stats0 := make([]Stats, n)
	for i, nd := range nodes {
		stats0[i] = nd.g.Stats()
	}
	cpu0, udp0 := processCPU(), udpReceiveDrops()
	b.ResetTimer()
	start := time.Now()
	tick := time.NewTicker(time.Millisecond)
	seq := 0
	for seq < total {
		<-tick.C
		// Catch up to the schedule if a tick was late.
		due := min(total, int(time.Since(start)*time.Duration(rate)/time.Second))
		for ; seq < due; seq++ {
			nd := nodes[seq%n]
			k, _ := nd.t.ParseKey(fmt.Sprint(seq))
			rec.written[seq].Store(time.Now().UnixNano())
			if _, err := nd.t.StoreKey(k, fmt.Sprintf("10.0.0.%d:8080", seq%8)); err != nil {
				b.Fatal(err)
			}
		}
	}
	tick.Stop()
	writing := time.Since(start)
	want := total * (n - 1)
	deadline := time.Now().Add(convergenceDrain)
	for rec.applied.Load() < int64(want) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	b.StopTimer()
	window := time.Since(start)
	cpu := processCPU() - cpu0
	udpDrops := udpReceiveDrops() - udp0

	var d Stats
	for i, nd := range nodes {
		s, s0 := nd.g.Stats(), stats0[i]
		d.UpdatesReceived += s.UpdatesReceived - s0.UpdatesReceived
		d.MessagesSent += s.MessagesSent - s0.MessagesSent
		d.MessagesReceived += s.MessagesReceived - s0.MessagesReceived
		d.WireBytesSent += s.WireBytesSent - s0.WireBytesSent
		d.BytesSent += s.BytesSent - s0.BytesSent
		d.Leaves += s.Leaves - s0.Leaves
		d.Dropped += s.Dropped - s0.Dropped
		d.SendErrors += s.SendErrors - s0.SendErrors
		d.NonMembers += s.NonMembers - s0.NonMembers
		d.MembershipRepairs += s.MembershipRepairs - s0.MembershipRepairs
	}
	lat := rec.latencies()
	perNodeSec := float64(n) * window.Seconds()
	b.ReportMetric(quantile(lat, want, 0.50), "p50-ms")
	b.ReportMetric(quantile(lat, want, 0.99), "p99-ms")
	b.ReportMetric(quantile(lat, want, 1), "max-ms")
	b.ReportMetric(float64(len(lat))/float64(want)*100, "delivered-%")
	if d.UpdatesReceived > 0 {
		b.ReportMetric(float64(cpu)/1e6/(float64(d.UpdatesReceived)/1000), "cpu-ms/node/1k-recv")
	}
	b.ReportMetric(float64(cpu)/float64(window)/float64(n)*100, "cpu-%/node")
	b.ReportMetric(idle, "idle-cpu-%/node")
	b.ReportMetric(float64(d.MessagesSent)/perNodeSec, "msgs-out/node/s")
	b.ReportMetric(float64(d.WireBytesSent)/perNodeSec, "wire-B-out/node/s")
	b.ReportMetric(float64(d.Leaves), "leaves")
	b.ReportMetric(float64(d.Dropped+d.SendErrors), "drops+send-errors")
	b.ReportMetric(float64(udpDrops), "udp-rcvbuf-drops")
	b.ReportMetric(float64(d.NonMembers), "non-member-refusals")
	b.ReportMetric(float64(d.MembershipRepairs), "membership-repairs")
	b.ReportMetric(float64(total)/writing.Seconds(), "writes/s")
	b.Logf("nodes=%d rate=%d: %d of %d deliveries in %v (writes took %v); cpu %v; received %d updates in %d messages",
		n, rate, len(lat), want, window.Round(time.Millisecond), writing.Round(time.Millisecond),
		cpu.Round(time.Millisecond), d.UpdatesReceived, d.MessagesReceived)

	f.close()
	checkGoroutines(b, goroutines)
}

// checkGoroutines fails the benchmark if goroutines started by it are
// still running a while after every node closed.
func checkGoroutines(b *testing.B, before int) {
	b.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		b.Fatalf("%d goroutines left running after Close (%d before):\n%s", n-before, before, buf)
	}
}

// syncedTables returns two tables holding the same entries (the same
// writes: versions and nodes included), as two nodes' tables are once
// replication has converged.
func syncedTables(b *testing.B, entries int) (*sticktable.Table, *sticktable.Table) {
	b.Helper()
	size := 2 * entries // room to spare: a sharded table evicts before it is full
	cfg := sticktable.Config{Type: sticktable.KeyInteger, Size: size, Expire: time.Hour}
	t0, t1 := mustTable(b, cfg), mustTable(b, cfg)
	t0.SetNode("node1")
	for i := range entries {
		k, _ := t0.ParseKey(fmt.Sprint(i))
		if _, err := t0.StoreKey(k, fmt.Sprintf("10.0.0.%d:8080", i%8)); err != nil {
			b.Fatal(err)
		}
	}
	var err error
	t0.RangeChanges(func(c sticktable.Change) bool {
		_, err = t1.Apply(c)
		return err == nil
	})
	if err != nil {
		b.Fatal(err)
	}
	if t0.Len() != entries || t1.Len() != entries {
		b.Fatalf("tables hold %d and %d entries, want %d", t0.Len(), t1.Len(), entries)
	}
	return t0, t1
}

// BenchmarkAntiEntropyInSyncSize measures one anti-entropy round (a
// memberlist push/pull carrying both nodes' digests) between two nodes
// whose tables already agree, at 10k, 100k and 1M entries: the CPU time
// per node per round (process CPU over the round, divided by the two
// nodes; the digest walk dominates) and every byte the sockets carried
// (memberlist framing, encryption and node lists included). A round that
// sends any entry fails the benchmark.
//
//	go test -run '^$' -bench BenchmarkAntiEntropyInSyncSize -benchtime 5x ./peers/
func BenchmarkAntiEntropyInSyncSize(b *testing.B) {
	for _, entries := range []int{10_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("entries=%d", entries), func(b *testing.B) {
			goroutines := runtime.NumGoroutine()
			o := testOpts()
			o.pushPull = time.Hour // rounds are started by hand
			o.probe = time.Hour    // no probes in the counts
			t0, t1 := syncedTables(b, entries)
			g0 := startNode(b, "node1", nil, o, testSecret)
			g0.Attach("sessions", t0)
			g1 := startNode(b, "node2", []string{g0.Addr()}, o, testSecret)
			g1.Attach("sessions", t1)
			waitFor(b, 30*time.Second, "membership", func() bool {
				return len(g0.targets()) == 1 && len(g1.targets()) == 1
			})
			sent := func() uint64 { return g0.tr.bytesSent.Load() + g1.tr.bytesSent.Load() }
			settled := func() uint64 {
				for {
					w := sent()
					time.Sleep(100 * time.Millisecond)
					if sent() == w {
						return w
					}
				}
			}
			// the join's own exchanges settle first
			time.Sleep(followUpDelay + time.Second)
			settled()
			entries0 := g0.Stats().SyncEntriesSent + g1.Stats().SyncEntriesSent
			var bytes uint64
			var cpu, wall time.Duration
			b.ResetTimer()
			for range b.N {
				w := settled()
				runtime.GC() // the walk's garbage belongs to the round
				c0, t := processCPU(), time.Now()
				if _, err := g1.ml.Join([]string{g0.Addr()}); err != nil { // a push/pull
					b.Fatal(err)
				}
				// both sides have answered when memberlist's Join
				// returns; the node that received the push merges
				// asynchronously, so wait for its sends to stop too
				bytes += settled() - w
				cpu += processCPU() - c0
				wall += time.Since(t)
			}
			b.StopTimer()
			if n := g0.Stats().SyncEntriesSent + g1.Stats().SyncEntriesSent - entries0; n != 0 {
				b.Fatalf("rounds between agreeing tables sent %d entries", n)
			}
			// The idle process (no probes, no gossip worth counting)
			// spends next to nothing in the 100 ms quiet periods.
			b.ReportMetric(float64(cpu)/1e6/float64(b.N)/2, "cpu-ms/node/round")
			b.ReportMetric(float64(bytes)/float64(b.N), "wire-B/round")
			b.ReportMetric(float64(cpu)/float64(b.N)/2/float64(entries), "cpu-ns/node/entry")
			g0.Close()
			g1.Close()
			t0.Close()
			t1.Close()
			checkGoroutines(b, goroutines)
		})
	}
}
