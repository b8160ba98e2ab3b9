package peers

import (
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-sticky/sticky/sticktable"
)

// latencyRecorder measures, for every write, how long until each other
// node applied it: writes are integer keys numbered from 0, stamped when
// written; the apply hook looks the stamp up.
type latencyRecorder struct {
	written []atomic.Int64 // unix nanoseconds by key
	seen    sync.Map       // "node/key": first apply only (anti-entropy may re-apply)
	mu      sync.Mutex
	lat     []time.Duration
	applied atomic.Int64
}

// hook returns the apply hook for one node.
func (r *latencyRecorder) hook(node string) func(string, sticktable.Change) {
	return func(_ string, c sticktable.Change) {
		// Only another node's write arriving here counts: anti-entropy
		// echoing a node's own entry back (which extends its expiry a
		// little, so Apply reports it) is not a delivery.
		if c.Op != sticktable.OpStore || c.Node == node {
			return
		}
		seq := binary.BigEndian.Uint64(c.Key.AppendBytes(nil))
		if seq >= uint64(len(r.written)) {
			return
		}
		if _, dup := r.seen.LoadOrStore(fmt.Sprint(node, "/", seq), true); dup {
			return
		}
		r.record(seq)
	}
}

func (r *latencyRecorder) record(seq uint64) {
	at := r.written[seq].Load()
	if at == 0 {
		return
	}
	d := time.Duration(time.Now().UnixNano() - at)
	r.mu.Lock()
	r.lat = append(r.lat, d)
	r.mu.Unlock()
	r.applied.Add(1)
}

func percentile(s []time.Duration, p float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// BenchmarkConvergence writes a steady 10,000 updates/s, spread over the
// nodes, for a few seconds and reports how long each update took to be
// applied on every other node, and the bytes on the wire per update
// delivered (everything the sockets carried, memberlist's own gossip and
// encryption included, divided by updates × receivers).
func BenchmarkConvergence(b *testing.B) {
	for _, n := range []int{3, 10} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			const rate, seconds = 10000, 3
			const total = rate * seconds
			rec := &latencyRecorder{written: make([]atomic.Int64, total)}
			o := testOpts()
			o.pushPull = 30 * time.Second // measure live replication only
			// memberlist's default failure detection: the test speed-up
			// makes a starved node look failed, and the membership churn
			// that follows measures the machine, not replication.
			o.probe = 0
			nodes := clusterWith(b, n, sticktable.KeyInteger, 1<<20, func(name string) options {
				o := o
				o.onApply = rec.hook(name)
				return o
			})
			// Let the join exchanges (and their follow-ups) finish:
			// this measures the steady state.
			time.Sleep(followUpDelay + time.Second)
			var wire0 uint64
			for _, nd := range nodes {
				wire0 += nd.g.tr.bytesSent.Load()
			}
			b.ResetTimer()
			start := time.Now()
			tick := time.NewTicker(time.Millisecond)
			seq := 0
			for seq < total {
				<-tick.C
				// Catch up to the schedule if a tick was late.
				due := min(total, int(time.Since(start)*rate/time.Second))
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
			want := int64(total * (n - 1))
			deadline := time.Now().Add(60 * time.Second)
			for rec.applied.Load() < want && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			b.StopTimer()
			var wire, payload, sent uint64
			for _, nd := range nodes {
				wire += nd.g.tr.bytesSent.Load()
				st := nd.g.Stats()
				payload += st.BytesSent
				sent += st.UpdatesSent
			}
			wire -= wire0
			rec.mu.Lock()
			lat := slices.Clone(rec.lat)
			rec.mu.Unlock()
			slices.Sort(lat)
			delivered := float64(len(lat))
			b.ReportMetric(float64(percentile(lat, 0.50))/1e6, "p50-ms")
			b.ReportMetric(float64(percentile(lat, 0.99))/1e6, "p99-ms")
			b.ReportMetric(float64(percentile(lat, 1))/1e6, "max-ms")
			b.ReportMetric(delivered/float64(want)*100, "delivered-%")
			b.ReportMetric(float64(wire)/delivered, "wire-B/update")
			b.ReportMetric(float64(payload)/float64(sent), "payload-B/update")
			b.ReportMetric(float64(total)/time.Since(start).Seconds(), "writes/s")
			if int64(len(lat)) < want {
				b.Logf("only %d of %d deliveries by the deadline", len(lat), want)
			}
		})
	}
}

// BenchmarkCatchUp restarts a node that missed 100,000 updates (a new
// group with an empty table) and reports the time until its table holds
// them all, and the bytes that took.
func BenchmarkCatchUp(b *testing.B) {
	const entries = 100000
	o := testOpts()
	o.pushPull = 30 * time.Second // the join's exchange does the work
	nodes := cluster(b, 2, sticktable.KeyInteger, 1<<20, o)
	for i := range entries {
		nodes[0].t.Store(fmt.Sprint(i), fmt.Sprintf("10.0.0.%d:8080", i%8))
	}
	deadline := time.Now().Add(60 * time.Second)
	for nodes[1].t.Len() < entries && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if nodes[1].t.Len() < entries {
		b.Fatalf("live replication: %d of %d", nodes[1].t.Len(), entries)
	}
	b.ResetTimer()
	var took time.Duration
	var bytes uint64
	for i := range b.N {
		wire0 := wireBytes(nodes[0].g, nodes[1].g)
		start := time.Now()
		g := startNode(b, fmt.Sprint("late", i), []string{nodes[0].g.Addr()}, o, testSecret)
		t := newTable(b, sticktable.KeyInteger, 1<<20)
		g.Attach("sessions", t)
		for t.Len() < entries && time.Since(start) < 60*time.Second {
			time.Sleep(time.Millisecond)
		}
		took += time.Since(start)
		b.Logf("iteration %d: caught up in %v", i, time.Since(start))
		if t.Len() < entries {
			b.Fatalf("caught up %d of %d", t.Len(), entries)
		}
		bytes += wireBytes(nodes[0].g, nodes[1].g) - wire0
		b.StopTimer()
		g.Close()
		b.StartTimer()
	}
	b.ReportMetric(took.Seconds()/float64(b.N), "catchup-s")
	b.ReportMetric(float64(bytes)/float64(b.N)/entries, "wire-B/entry")
}

// BenchmarkDigest measures the anti-entropy digest of a table of a
// million ip entries: the walk each push/pull costs.
func BenchmarkDigest(b *testing.B) {
	tbl := mustTable(b, sticktable.Config{Type: sticktable.KeyIP, Size: 1 << 20, Expire: time.Hour})
	for i := range 1 << 20 {
		k, _ := tbl.ParseKey(fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255))
		tbl.StoreKey(k, fmt.Sprintf("10.0.0.%d:8080", i%8))
	}
	a := newAttachment(&Group{cfg: Config{Name: "x"}}, "s", tbl)
	b.ResetTimer()
	for range b.N {
		a.digest(0)
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/digest")
}

// BenchmarkAntiEntropyInSync measures one anti-entropy round (a
// memberlist push/pull carrying both digests) between two nodes whose
// 100,000-entry tables already agree, against the bytes a full transfer of
// the table costs (a node joining empty). Everything the sockets carried
// counts: memberlist's framing, encryption and node lists included. The
// target is a round under 1% of a full transfer.
func BenchmarkAntiEntropyInSync(b *testing.B) {
	const entries = 100000
	o := testOpts()
	o.pushPull = time.Hour // rounds are started by hand
	o.probe = time.Hour    // no probes in the byte counts
	nodes := cluster(b, 2, sticktable.KeyInteger, 1<<20, o)
	for i := range entries {
		nodes[0].t.Store(fmt.Sprint(i), fmt.Sprintf("10.0.0.%d:8080", i%8))
	}
	deadline := time.Now().Add(60 * time.Second)
	for nodes[1].t.Len() < entries && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if nodes[1].t.Len() < entries {
		b.Fatalf("live replication: %d of %d", nodes[1].t.Len(), entries)
	}
	// the join's own exchanges settle first
	time.Sleep(followUpDelay + time.Second)
	var late *Group
	// sent is every byte the nodes' sockets sent (each counted once).
	sent := func() uint64 {
		n := nodes[0].g.tr.bytesSent.Load() + nodes[1].g.tr.bytesSent.Load()
		if late != nil {
			n += late.tr.bytesSent.Load()
		}
		return n
	}
	settled := func() uint64 {
		for {
			w := sent()
			time.Sleep(200 * time.Millisecond)
			if sent() == w {
				return w
			}
		}
	}

	// A full transfer: a node joining with an empty table.
	w0 := settled()
	late = startNode(b, "late", []string{nodes[0].g.Addr()}, o, testSecret)
	lt := newTable(b, sticktable.KeyInteger, 1<<20)
	late.Attach("sessions", lt)
	for lt.Len() < entries && time.Since(deadline) < 60*time.Second {
		time.Sleep(10 * time.Millisecond)
	}
	full := settled() - w0 // includes the digests of the exchange
	late.Close()
	late = nil
	time.Sleep(time.Second)

	entriesSent := nodes[0].g.Stats().SyncEntriesSent + nodes[1].g.Stats().SyncEntriesSent
	b.ResetTimer()
	var round uint64
	for range b.N {
		w := settled()
		if _, err := nodes[1].g.ml.Join([]string{nodes[0].g.Addr()}); err != nil { // a push/pull
			b.Fatal(err)
		}
		round += settled() - w
	}
	b.StopTimer()
	if sent := nodes[0].g.Stats().SyncEntriesSent + nodes[1].g.Stats().SyncEntriesSent; sent != entriesSent {
		b.Fatalf("rounds between agreeing tables sent %d entries", sent-entriesSent)
	}
	per := float64(round) / float64(b.N)
	b.ReportMetric(per, "wire-B/round")
	b.ReportMetric(float64(full), "wire-B/full")
	b.ReportMetric(per/float64(full)*100, "round-%-of-full")
}
