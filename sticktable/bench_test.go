package sticktable

import (
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/caddy-sticky/sticky/internal/hashmix"
)

// Benchmarks run at the scale the targets are stated for: a million
// entries. Run them with, for example:
//
//	go test -run '^$' -bench . -benchmem -cpu 1,2 ./sticktable/

const benchEntries = 1_000_000

var benchServers = []string{
	"10.0.0.11:8080", "10.0.0.12:8080", "10.0.0.13:8080", "10.0.0.14:8080",
	"10.0.0.15:8080", "10.0.0.16:8080", "10.0.0.17:8080", "10.0.0.18:8080",
}

// benchKey appends the text of the i-th benchmark key of a type: an IPv4
// address, or a 32-character session ID for string keys. Keys are
// computed, not looked up in a slice, because in a server the key text
// sits in cache (it was just parsed from the request); a slice of a
// million strings would add two cache misses per operation that have
// nothing to do with the table.
func benchKey(buf []byte, typ KeyType, i uint64) []byte {
	if typ == KeyIP {
		// A bijection on 32 bits, so distinct i give distinct addresses.
		x := uint32(i)*0x9e3779b1 + 0x7f4a7c15
		x ^= x >> 15
		x *= 0x2c1b3c6d
		return netip.AddrFrom4([4]byte{byte(x >> 24), byte(x >> 16), byte(x >> 8), byte(x)}).AppendTo(buf)
	}
	const hexdigits = "0123456789abcdef"
	a, b := hashmix.Fmix64(i), hashmix.Fmix64(i^0x5555555555555555)
	for j := range 16 {
		buf = append(buf, hexdigits[(a>>(4*j))&15])
	}
	for j := range 16 {
		buf = append(buf, hexdigits[(b>>(4*j))&15])
	}
	return buf
}

// keyText views buf as a string without copying; the table copies what
// it keeps.
func keyText(buf []byte) string { return unsafe.String(unsafe.SliceData(buf), len(buf)) }

// benchTable is a table holding keys 0..benchEntries-1; keys from
// benchEntries on are absent.
type benchTable struct {
	t *Table
}

var (
	benchMu     sync.Mutex
	benchTables = map[KeyType]*benchTable{}
)

// filled returns a shared table of one million entries, built once per
// key type: building it takes longer than many of the benchmarks.
func filled(b *testing.B, typ KeyType) *benchTable {
	b.Helper()
	benchMu.Lock()
	defer benchMu.Unlock()
	if bt := benchTables[typ]; bt != nil {
		return bt
	}
	t, err := New(Config{Type: typ})
	if err != nil {
		b.Fatal(err)
	}
	var buf []byte
	for i := range uint64(benchEntries) {
		buf = benchKey(buf[:0], typ, i)
		if _, err := t.Store(keyText(buf), benchServers[i%uint64(len(benchServers))]); err != nil {
			b.Fatal(err)
		}
	}
	if t.Len() != benchEntries {
		b.Fatalf("filled %d of %d", t.Len(), benchEntries)
	}
	bt := &benchTable{t: t}
	benchTables[typ] = bt
	return bt
}

// rng is a per-goroutine xorshift generator; math/rand's global source
// would add a shared cache line to every operation measured.
type rng uint64

func (r *rng) next() uint64 {
	x := uint64(*r)
	x ^= x << 13
	x ^= x >> 7
	x ^= x << 17
	*r = rng(x)
	return x
}

var seedCounter atomic.Uint64

func newRng() rng { return rng(seedCounter.Add(1)*0x9e3779b97f4a7c15 | 1) }

func BenchmarkLookupHit(b *testing.B) {
	for _, typ := range []KeyType{KeyIP, KeyString} {
		b.Run(typ.String(), func(b *testing.B) {
			bt := filled(b, typ)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				r := newRng()
				buf := make([]byte, 0, 64)
				for pb.Next() {
					buf = benchKey(buf[:0], typ, r.next()%benchEntries)
					if _, ok := bt.t.Lookup(keyText(buf)); !ok {
						b.Error("miss")
						return
					}
				}
			})
		})
	}
}

func BenchmarkLookupMiss(b *testing.B) {
	for _, typ := range []KeyType{KeyIP, KeyString} {
		b.Run(typ.String(), func(b *testing.B) {
			bt := filled(b, typ)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				r := newRng()
				buf := make([]byte, 0, 64)
				for pb.Next() {
					buf = benchKey(buf[:0], typ, benchEntries+r.next()%benchEntries)
					if _, ok := bt.t.Lookup(keyText(buf)); ok {
						b.Error("hit")
						return
					}
				}
			})
		})
	}
}

// BenchmarkStore measures the three kinds of store: a refresh (same
// server, what `on` does on every request of a stuck user), a server
// change, and a new key into a full table (insert plus LRU eviction).
func BenchmarkStore(b *testing.B) {
	for _, typ := range []KeyType{KeyIP, KeyString} {
		b.Run(typ.String()+"/refresh", func(b *testing.B) {
			bt := filled(b, typ)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				r := newRng()
				buf := make([]byte, 0, 64)
				for pb.Next() {
					i := r.next() % benchEntries
					buf = benchKey(buf[:0], typ, i)
					bt.t.Store(keyText(buf), benchServers[i%uint64(len(benchServers))])
				}
			})
		})
		b.Run(typ.String()+"/change", func(b *testing.B) {
			bt := filled(b, typ)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				r := newRng()
				buf := make([]byte, 0, 64)
				for pb.Next() {
					x := r.next()
					buf = benchKey(buf[:0], typ, x%benchEntries)
					bt.t.Store(keyText(buf), benchServers[(x>>32)%uint64(len(benchServers))])
				}
			})
		})
		b.Run(typ.String()+"/new", func(b *testing.B) {
			// A table of a tenth of the key space, so nearly every store
			// adds a key and evicts one.
			t, _ := New(Config{Type: typ, Size: benchEntries / 10})
			defer t.Close()
			var buf []byte
			for i := range uint64(benchEntries / 10) {
				buf = benchKey(buf[:0], typ, i)
				t.Store(keyText(buf), benchServers[i%uint64(len(benchServers))])
			}
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				r := newRng()
				buf := make([]byte, 0, 64)
				for pb.Next() {
					x := r.next()
					buf = benchKey(buf[:0], typ, x%benchEntries)
					t.Store(keyText(buf), benchServers[(x>>32)%uint64(len(benchServers))])
				}
			})
		})
	}
}

// BenchmarkMixed is 90% lookups and 10% stores (half refreshes, half
// server changes) over a million entries.
func BenchmarkMixed(b *testing.B) {
	for _, typ := range []KeyType{KeyIP, KeyString} {
		b.Run(typ.String(), func(b *testing.B) {
			bt := filled(b, typ)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				r := newRng()
				buf := make([]byte, 0, 64)
				for pb.Next() {
					x := r.next()
					buf = benchKey(buf[:0], typ, x%benchEntries)
					k := keyText(buf)
					if (x>>40)%10 == 0 {
						bt.t.Store(k, benchServers[(x>>48)%uint64(len(benchServers))])
					} else {
						bt.t.Lookup(k)
					}
				}
			})
		})
	}
}

// BenchmarkMemoryPerEntry fills a fresh table with a million entries and
// reports the heap it holds per entry (key bytes of string keys
// included).
func BenchmarkMemoryPerEntry(b *testing.B) {
	for _, typ := range []KeyType{KeyIP, KeyString} {
		b.Run(typ.String(), func(b *testing.B) {
			var perEntry float64
			buf := make([]byte, 0, 64)
			for range b.N {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				t, _ := NewWithOptions(Config{Type: typ}, Options{ReapInterval: -1})
				for i := range uint64(benchEntries) {
					buf = benchKey(buf[:0], typ, i)
					t.Store(keyText(buf), benchServers[i%uint64(len(benchServers))])
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				perEntry = float64(after.HeapAlloc-before.HeapAlloc) / float64(t.Len())
				if t.Len() < benchEntries*99/100 {
					b.Fatalf("only %d entries stored", t.Len())
				}
				runtime.KeepAlive(t)
			}
			b.ReportMetric(perEntry, "B/entry")
		})
	}
}

// BenchmarkLookupWhileExpiring measures lookup latency percentiles while a
// million entries expire at once and the background reaper reclaims them,
// against a baseline with nothing expiring. During expiry half the
// lookups hit live entries (live-p99 is theirs: the "flat p99" question)
// and half find expired ones, which they reclaim inline (all-p99 covers
// both). It reports numbers only: latency is not asserted on, machines
// are noisy. -v logs the slow tail.
func BenchmarkLookupWhileExpiring(b *testing.B) {
	const live = 100_000
	var clock atomic.Int64
	clock.Store(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	key := func(buf []byte, i uint64) string { return keyText(benchKey(buf[:0], KeyIP, i)) }
	// Keys 0..benchEntries-1 expire; the next `live` ones stay.
	var base50, base99, base999, live50, live99, live999, all99, reclaim float64
	for range b.N {
		t, err := NewWithOptions(Config{Type: KeyIP, Size: 2 * benchEntries, Expire: time.Minute},
			Options{Now: now, ReapInterval: 10 * time.Millisecond})
		if err != nil {
			b.Fatal(err)
		}
		buf := make([]byte, 0, 64)
		for i := range uint64(benchEntries) {
			t.Store(key(buf, i), benchServers[i%uint64(len(benchServers))])
		}
		clock.Add(int64(59 * time.Second))
		for i := range uint64(live) {
			t.Store(key(buf, benchEntries+i), benchServers[i%uint64(len(benchServers))])
		}
		base := make([]time.Duration, 0, benchEntries)
		liveLat := make([]time.Duration, 0, benchEntries)
		deadLat := make([]time.Duration, 0, benchEntries)
		r := newRng()
		measure := func(lat *[]time.Duration, k string) {
			start := time.Now()
			t.Lookup(k)
			*lat = append(*lat, time.Since(start))
		}
		for range benchEntries {
			measure(&base, key(buf, benchEntries+r.next()%live))
		}

		clock.Add(int64(2 * time.Second)) // the million expire now
		var gcBefore, gcAfter runtime.MemStats
		runtime.ReadMemStats(&gcBefore)
		start := time.Now()
		for t.Len() > live {
			x := r.next()
			if x&1 == 0 {
				measure(&liveLat, key(buf, benchEntries+(x>>1)%live))
			} else {
				measure(&deadLat, key(buf, (x>>1)%benchEntries))
			}
		}
		reclaim = float64(time.Since(start).Milliseconds())
		runtime.ReadMemStats(&gcAfter)
		if testing.Verbose() {
			b.Logf("baseline: %s", overs(base))
			b.Logf("expiring, live keys: %s", overs(liveLat))
			b.Logf("expiring, expired keys: %s; %d GC cycles", overs(deadLat), gcAfter.NumGC-gcBefore.NumGC)
		}
		base50, base99, base999 = percentile(base, 0.5), percentile(base, 0.99), percentile(base, 0.999)
		live50, live99, live999 = percentile(liveLat, 0.5), percentile(liveLat, 0.99), percentile(liveLat, 0.999)
		all99 = percentile(append(liveLat, deadLat...), 0.99)
		t.Close()
	}
	b.ReportMetric(base50, "base-p50-ns")
	b.ReportMetric(base99, "base-p99-ns")
	b.ReportMetric(base999, "base-p99.9-ns")
	b.ReportMetric(live50, "live-p50-ns")
	b.ReportMetric(live99, "live-p99-ns")
	b.ReportMetric(live999, "live-p99.9-ns")
	b.ReportMetric(all99, "all-p99-ns")
	b.ReportMetric(reclaim, "reclaim-ms")
}

// overs summarizes the slow tail of a latency sample.
func overs(lat []time.Duration) string {
	var over [4]int
	for _, d := range lat {
		for i, lim := range []time.Duration{5 * time.Microsecond, 20 * time.Microsecond, 100 * time.Microsecond, time.Millisecond} {
			if d > lim {
				over[i]++
			}
		}
	}
	return fmt.Sprintf("%d lookups, over 5µs: %d, 20µs: %d, 100µs: %d, 1ms: %d", len(lat), over[0], over[1], over[2], over[3])
}

func percentile(d []time.Duration, p float64) float64 {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return float64(s[int(float64(len(s)-1)*p)].Nanoseconds())
}

// Small-table microbenchmarks: the cost of the code path itself, with
// everything in cache.
func BenchmarkLookupHot(b *testing.B) {
	for _, typ := range []KeyType{KeyIP, KeyInteger, KeyString} {
		b.Run(typ.String(), func(b *testing.B) {
			t, _ := New(Config{Type: typ})
			defer t.Close()
			key := map[KeyType]string{KeyIP: "10.1.2.3", KeyInteger: "123456", KeyString: "0123456789abcdef0123456789abcdef"}[typ]
			t.Store(key, "10.0.0.11:8080")
			b.ReportAllocs()
			for b.Loop() {
				t.Lookup(key)
			}
		})
	}
}

func ExampleTable() {
	t, _ := New(Config{Type: KeyIP, Size: 1000, Expire: 30 * time.Minute})
	defer t.Close()
	t.Store("::ffff:192.0.2.10", "10.0.0.11:8080")
	if e, ok := t.Lookup("192.0.2.10"); ok {
		fmt.Println(e.Key, "->", e.Server)
	}
	// Output: 192.0.2.10 -> 10.0.0.11:8080
}
