package sticktable

import (
	"strconv"
	"testing"
	"time"
)

// TestReapPacedResumes checks the background reaper's pacing: with its
// time budget spent it stops part way, reports the shard to resume at,
// and repeated paced rounds reclaim every expired entry (and nothing
// live), keeping the table's invariants, as one unpaced Reap does.
func TestReapPacedResumes(t *testing.T) {
	tbl, clk := newTestTable(t, Config{Type: KeyString, Expire: time.Minute}, Options{Shards: 8})
	const expiring, live = 4000, 100
	for i := range expiring {
		mustStore(t, tbl, "old-"+strconv.Itoa(i), "a")
	}
	clk.Add(59 * time.Second)
	for i := range live {
		mustStore(t, tbl, "new-"+strconv.Itoa(i), "b")
	}
	clk.Add(2 * time.Second)
	now := tbl.now()

	// A budget of 1ns is spent after the first batch.
	n, next, done := tbl.eng.reap(now, 0, 1)
	if done || n == 0 || n > reapBatch+sweepBatch {
		t.Fatalf("first paced round: freed %d, done %v; want one batch, not done", n, done)
	}
	mustCheck(t, tbl)
	// Each paced round resumes where the last stopped, so rounds of one
	// batch each get through every shard.
	total, rounds := n, 1
	for total < expiring {
		if rounds++; rounds > expiring {
			t.Fatalf("paced reaping stalled: freed %d of %d in %d rounds", total, expiring, rounds)
		}
		n, next, _ = tbl.eng.reap(now, next, 1)
		total += n
	}
	// A last unbudgeted round finds nothing left.
	if n, _, _ := tbl.eng.reap(now, next, 0); n != 0 {
		t.Fatalf("an unpaced round after the paced ones freed %d more", n)
	}
	if total != expiring || tbl.Len() != live {
		t.Fatalf("freed %d of %d, %d entries left, want %d", total, expiring, tbl.Len(), live)
	}
	if got := tbl.Stuck("a"); got != 0 {
		t.Fatalf("server a still counts %d entries", got)
	}
	if got := tbl.Stuck("b"); got != live {
		t.Fatalf("server b counts %d entries, want %d", got, live)
	}
	mustCheck(t, tbl)
}
