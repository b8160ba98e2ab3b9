package peers

import (
	"fmt"
	"testing"
	"time"

	"github.com/caddy-sticky/sticky/sticktable"
)

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

// BenchmarkDigest measures the anti-entropy digest of a table of ip
// entries at 10k, 100k and 1M entries: the walk each push/pull costs each
// side (see BenchmarkAntiEntropyInSyncSize for a whole round).
func BenchmarkDigest(b *testing.B) {
	for _, entries := range []int{10_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("entries=%d", entries), func(b *testing.B) {
			tbl := mustTable(b, sticktable.Config{Type: sticktable.KeyIP, Size: 2 * entries, Expire: time.Hour})
			for i := range entries {
				k, _ := tbl.ParseKey(fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255))
				tbl.StoreKey(k, fmt.Sprintf("10.0.0.%d:8080", i%8))
			}
			a := newAttachment(&Group{cfg: Config{Name: "x"}}, "s", tbl)
			b.ResetTimer()
			for range b.N {
				a.digest(0)
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/1e3/float64(b.N), "ms/digest")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(entries), "ns/entry")
		})
	}
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
