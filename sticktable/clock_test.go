package sticktable

import (
	"sync"
	"testing"
	"time"
)

func TestClockMonotonic(t *testing.T) {
	clk := newFakeClock()
	c := NewClock(clk.Now)
	a := c.Now()
	if got := VersionTime(a); !got.Equal(clk.Now().Truncate(time.Millisecond)) {
		t.Fatalf("physical part %v, want %v", got, clk.Now())
	}
	b := c.Now() // same millisecond: logical counter advances
	if b != a+1 {
		t.Fatalf("same-ms versions %d then %d", a, b)
	}
	clk.Add(-time.Hour) // wall clock steps back
	if d := c.Now(); d <= b {
		t.Fatalf("clock went back: %d after %d", d, b)
	}
	clk.Add(2 * time.Hour)
	e := c.Now()
	if VersionTime(e).Before(clk.Now().Truncate(time.Millisecond)) {
		t.Fatal("clock does not follow physical time forward")
	}
	// Observe: a remote version from the future is exceeded by the next Now.
	remote := e + 1000<<LogicalBits
	c.Observe(remote)
	if f := c.Now(); f <= remote {
		t.Fatalf("Now %d not above observed %d", f, remote)
	}
	c.Observe(1) // observing the past changes nothing
	if c.Last() <= remote {
		t.Fatal("Observe moved the clock back")
	}
	var zero Clock // usable as is, on the real clock
	if zero.Now() == 0 {
		t.Fatal("zero clock returned 0")
	}
}

func TestClockConcurrentUnique(t *testing.T) {
	var c Clock
	const workers, each = 4, 2000
	out := make([][]uint64, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for range each {
				out[w] = append(out[w], c.Now())
			}
		})
	}
	wg.Wait()
	seen := map[uint64]bool{}
	for _, vs := range out {
		for i, v := range vs {
			if seen[v] {
				t.Fatalf("version %d issued twice", v)
			}
			seen[v] = true
			if i > 0 && v <= vs[i-1] {
				t.Fatal("not monotonic within a goroutine")
			}
		}
	}
}

func TestCompareVersions(t *testing.T) {
	cases := []struct {
		av   uint64
		an   string
		bv   uint64
		bn   string
		want int
	}{
		{1, "a", 2, "a", -1},
		{2, "a", 1, "z", 1},
		{2, "a", 2, "b", -1},
		{2, "b", 2, "a", 1},
		{2, "a", 2, "a", 0},
	}
	for _, c := range cases {
		if got := CompareVersions(c.av, c.an, c.bv, c.bn); got != c.want {
			t.Errorf("CompareVersions(%d %q, %d %q) = %d, want %d", c.av, c.an, c.bv, c.bn, got, c.want)
		}
	}
}

// TestClockSaturates: a clock that observed the greatest version, or
// reads a time beyond what versions can hold, stays at the greatest
// version instead of wrapping to small ones.
func TestClockSaturates(t *testing.T) {
	c := NewClock(func() time.Time { return time.UnixMilli(1_700_000_000_000) })
	c.Observe(MaxVersion - 1)
	if v := c.Now(); v != MaxVersion {
		t.Fatalf("after observing max-1: %d", v)
	}
	for range 3 {
		if v := c.Now(); v != MaxVersion {
			t.Fatalf("wrapped to %d", v)
		}
	}
	far := NewClock(func() time.Time { return time.UnixMilli(1 << 50) })
	if v := far.Now(); v != MaxVersion {
		t.Fatalf("a time beyond the version range gave %d", v)
	}
}
