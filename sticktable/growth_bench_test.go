package sticktable

import (
	"bytes"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// growthSizes are the table sizes the growth benchmarks run at. 10M entries
// need about 1.5 GB of heap for string keys and take a while to fill, so
// they run only with STICKY_BENCH_10M=1:
//
//	go test -run '^$' -bench Growth -benchtime 1x ./sticktable/
//	STICKY_BENCH_10M=1 go test -run '^$' -bench Growth -benchtime 1x -timeout 30m ./sticktable/
func growthSizes() []int {
	sizes := []int{10_000, 100_000, 1_000_000}
	if os.Getenv("STICKY_BENCH_10M") == "1" {
		sizes = append(sizes, 10_000_000)
	}
	return sizes
}

func sizeName(n int) string {
	switch {
	case n >= 1_000_000:
		return strconv.Itoa(n/1_000_000) + "M"
	case n >= 1_000:
		return strconv.Itoa(n/1_000) + "k"
	}
	return strconv.Itoa(n)
}

// fillTable makes a table holding n entries of typ, without a reaper. Its
// size is 2n: shards fill unevenly, and a table at its cap evicts.
func fillTable(b *testing.B, typ KeyType, n int) *Table {
	b.Helper()
	t, err := NewWithOptions(Config{Type: typ, Size: 2 * n, Expire: time.Hour}, Options{ReapInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 0, 64)
	for i := range uint64(n) {
		buf = benchKey(buf[:0], typ, i)
		if _, err := t.Store(keyText(buf), benchServers[i%uint64(len(benchServers))]); err != nil {
			b.Fatal(err)
		}
	}
	if t.Len() != n {
		b.Fatalf("filled %d of %d", t.Len(), n)
	}
	return t
}

// BenchmarkGrowthHeapPerEntry reports the heap a table holds per entry at
// each size (string keys: 32 bytes each, included).
func BenchmarkGrowthHeapPerEntry(b *testing.B) {
	for _, typ := range []KeyType{KeyIP, KeyString} {
		for _, n := range growthSizes() {
			b.Run(typ.String()+"/"+sizeName(n), func(b *testing.B) {
				var perEntry float64
				for range b.N {
					var before, after runtime.MemStats
					runtime.GC()
					runtime.ReadMemStats(&before)
					t := fillTable(b, typ, n)
					runtime.GC()
					runtime.ReadMemStats(&after)
					perEntry = float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
					runtime.KeepAlive(t)
					t.Close()
				}
				b.ReportMetric(perEntry, "B/entry")
			})
		}
	}
}

// BenchmarkGrowthSnapshot reports, at each size, how long writing a
// snapshot and reading it back into an empty table take, and the
// snapshot's size per entry. Restoring happens before a config serves
// (target: 1M entries each under 1 s).
func BenchmarkGrowthSnapshot(b *testing.B) {
	for _, typ := range []KeyType{KeyIP, KeyString} {
		for _, n := range growthSizes() {
			b.Run(typ.String()+"/"+sizeName(n), func(b *testing.B) {
				src := fillTable(b, typ, n)
				defer src.Close()
				var writeMs, readMs, bytesPer float64
				var buf bytes.Buffer
				for range b.N {
					buf.Reset()
					start := time.Now()
					if err := src.WriteSnapshot(&buf); err != nil {
						b.Fatal(err)
					}
					writeMs = float64(time.Since(start).Microseconds()) / 1000
					bytesPer = float64(buf.Len()) / float64(n)
					dst, err := NewWithOptions(Config{Type: typ, Size: 2 * n, Expire: time.Hour}, Options{ReapInterval: -1})
					if err != nil {
						b.Fatal(err)
					}
					start = time.Now()
					got, err := dst.ReadSnapshot(bytes.NewReader(buf.Bytes()))
					readMs = float64(time.Since(start).Microseconds()) / 1000
					if err != nil || got != n {
						b.Fatalf("restored %d of %d: %v", got, n, err)
					}
					dst.Close()
				}
				b.ReportMetric(writeMs, "write-ms")
				b.ReportMetric(readMs, "restore-ms")
				b.ReportMetric(bytesPer, "snapshot-B/entry")
			})
		}
	}
}

// BenchmarkGrowthLookup reports the single-goroutine hit cost at each size:
// how lookups slow down as the table outgrows the caches.
func BenchmarkGrowthLookup(b *testing.B) {
	for _, typ := range []KeyType{KeyIP, KeyString} {
		for _, n := range growthSizes() {
			b.Run(typ.String()+"/"+sizeName(n), func(b *testing.B) {
				t := fillTable(b, typ, n)
				defer t.Close()
				r := newRng()
				buf := make([]byte, 0, 64)
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					buf = benchKey(buf[:0], typ, r.next()%uint64(n))
					if _, ok := t.Lookup(keyText(buf)); !ok {
						b.Fatal("miss")
					}
				}
			})
		}
	}
}
